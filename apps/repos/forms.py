from __future__ import annotations

from typing import Any

from django import forms


class CredentialForm(forms.Form):
    host = forms.CharField(max_length=300, help_text="e.g. github.com or git.example.org:8443")
    username = forms.CharField(
        max_length=255,
        required=False,
        label="User name",
        help_text="Only if the host needs one (GitLab: oauth2).",
    )
    token = forms.CharField(
        max_length=4096,
        label="Access token",
        # never echoed back into the page, not even after an error
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted. It is never shown again.",
    )
    label = forms.CharField(max_length=100, required=False)
    team = forms.ChoiceField(required=False, label="For", choices=[("", "Just me")])

    def __init__(self, *args: Any, teams: list[tuple[str, str]] = (), **kwargs: Any):  # type: ignore[assignment]
        super().__init__(*args, **kwargs)
        self.fields["team"].choices = [("", "Just me"), *teams]  # type: ignore[attr-defined]


class LaunchForm(forms.Form):
    repository = forms.CharField(max_length=2000, label="Repository URL or DOI")
    ref = forms.CharField(max_length=255, required=False, label="Branch, tag or commit")
    team = forms.ChoiceField(required=False, label="Launch for", choices=[("", "Just me")])

    def __init__(self, *args: Any, teams: list[tuple[str, str]] = (), **kwargs: Any):  # type: ignore[assignment]
        super().__init__(*args, **kwargs)
        self.fields["team"].choices = [("", "Just me"), *teams]  # type: ignore[attr-defined]
