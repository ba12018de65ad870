from __future__ import annotations

from django import forms

from apps.sharing.models import ShareLink


class TeamEnvironmentForm(forms.Form):
    name = forms.CharField(max_length=100)
    repository = forms.CharField(
        max_length=2000, help_text="A repository URL, owner/repo for GitHub, or a DOI."
    )
    ref = forms.CharField(max_length=255, required=False, label="Branch, tag or commit")
    follow_branch = forms.BooleanField(
        required=False, initial=True, label="Follow the branch (launch its newest commit)"
    )
    urlpath = forms.CharField(max_length=1000, required=False, label="Path to open")
    cpu = forms.FloatField(required=False, label="CPU (cores)")
    memory_mib = forms.IntegerField(required=False, min_value=256, label="Memory (MiB)")


class ShareLinkForm(forms.Form):
    name = forms.CharField(max_length=100, required=False)
    repository = forms.CharField(
        max_length=2000, help_text="A repository URL, owner/repo for GitHub, or a DOI."
    )
    ref = forms.CharField(max_length=255, required=False, label="Branch, tag or commit")
    urlpath = forms.CharField(max_length=1000, required=False, label="Path to open")
    audience = forms.ChoiceField(choices=ShareLink.Audience.choices)
    team = forms.CharField(max_length=50, required=False)
    days = forms.IntegerField(
        min_value=1, max_value=365, required=False, label="Expires after (days)"
    )
