from __future__ import annotations

from django import forms


class BuildForm(forms.Form):
    repository = forms.CharField(
        max_length=2000,
        label="Repository",
        help_text="A GitHub, GitLab or git URL, a DOI, or a spec such as gh/org/repo/main.",
        widget=forms.TextInput(attrs={"placeholder": "https://github.com/org/repo"}),
    )
    ref = forms.CharField(max_length=255, required=False, label="Branch, tag or commit")
