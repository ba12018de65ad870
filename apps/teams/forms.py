from __future__ import annotations

from django import forms

from apps.teams.models import Role


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class EmailInviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class LinkInviteForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)
    days = forms.IntegerField(min_value=1, max_value=90, initial=7, label="Valid for (days)")
    max_uses = forms.IntegerField(min_value=1, required=False, label="Maximum uses")
