"""The instructor's forms. They check what a form can (types, sizes, the time zone, the
team) and turn local date-times into aware ones; the services check the rest."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from django import forms
from django.conf import settings
from django.utils import timezone

from apps.accounts.models import User
from apps.builds.backends.disk import parse_size
from apps.repos.providers import PROVIDERS
from apps.teams.models import Team
from apps.teams.selectors import memberships_for_user

LOCAL_FORMAT = "%Y-%m-%dT%H:%M"


@cache
def zone_choices() -> list[tuple[str, str]]:
    names = sorted(available_timezones() - {"localtime", "Factory"})
    return [(name, name.replace("_", " ")) for name in names]


class LocalDateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self) -> None:
        super().__init__(format=LOCAL_FORMAT)


def in_zone(value: datetime, zone: str) -> datetime:
    """A date-time the form read in the current time zone, as the same wall-clock time in
    ``zone`` (the one the instructor chose beside it)."""
    naive = timezone.make_naive(value) if timezone.is_aware(value) else value
    return timezone.make_aware(naive, ZoneInfo(zone))


def local_input(value: datetime, zone: str) -> str:
    """``value`` as a datetime-local field shows it, in ``zone``."""
    return timezone.localtime(value, ZoneInfo(zone)).strftime(LOCAL_FORMAT)


def repository_input(text: str) -> dict[str, str]:
    """``spec`` for a ``provider/...`` spec, else ``repo_url`` (a URL, DOI or shorthand)."""
    text = text.strip()
    provider = text.partition("/")[0]
    if "://" not in text and provider in PROVIDERS and text.count("/") >= 2:
        return {"spec": text}
    return {"repo_url": text}


class WorkshopForm(forms.Form):
    title = forms.CharField(max_length=200)
    repository = forms.CharField(
        max_length=2000, label="Repository",
        help_text="A GitHub, GitLab or git URL, a DOI, or a spec such as gh/org/repo/main.",
        widget=forms.TextInput(attrs={"placeholder": "https://github.com/org/repo"}),
    )  # fmt: skip
    ref = forms.CharField(
        max_length=255, required=False, label="Branch, tag or commit",
        help_text="Default: the default branch. Pinned to its commit now.",
    )  # fmt: skip
    urlpath = forms.CharField(
        max_length=1000, required=False, label="Open at",
        help_text="A path in the server, such as lab/tree/intro.ipynb.",
    )  # fmt: skip
    opens_at = forms.DateTimeField(label="Opens", widget=LocalDateTimeInput(),
                                   input_formats=[LOCAL_FORMAT])  # fmt: skip
    closes_at = forms.DateTimeField(label="Closes", widget=LocalDateTimeInput(),
                                    input_formats=[LOCAL_FORMAT])  # fmt: skip
    time_zone = forms.ChoiceField(label="Time zone", choices=zone_choices)
    seats = forms.IntegerField(min_value=1, max_value=1000, initial=20)
    cpu = forms.FloatField(required=False, min_value=0.1, label="CPU per seat (cores)",
                           help_text="Empty: the quota's limit.")  # fmt: skip
    memory = forms.CharField(max_length=20, required=False, label="Memory per seat",
                             help_text="Such as 2G or 512M. Empty: the default.")  # fmt: skip
    session_minutes = forms.IntegerField(min_value=5, max_value=24 * 60, initial=120,
                                         label="Session length (minutes)")  # fmt: skip
    guests = forms.BooleanField(
        required=False, label="Guest seats",
        help_text="People join with a display name, no account.",
    )  # fmt: skip
    email_domains = forms.CharField(
        max_length=500, required=False, label="Email domains",
        help_text="Signed-in attendees only from these, comma-separated (uni.edu).",
    )  # fmt: skip
    team_members_only = forms.BooleanField(required=False, label="Team members only")
    mount_volumes = forms.BooleanField(
        required=False, label="Mount attendees' own volumes",
        help_text="Signed-in attendees get their persistent/ files; no warm servers then.",
    )  # fmt: skip
    team = forms.ChoiceField(required=False, label="For")

    def __init__(self, user: User, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.managed = {
            m.team.slug: m.team for m in memberships_for_user(user) if m.can_manage
        }  # fmt: skip
        team_field = self.fields["team"]
        assert isinstance(team_field, forms.ChoiceField)
        team_field.choices = [("", "Just me (my quota)")] + [
            (slug, f"{team.name} (team quota)") for slug, team in self.managed.items()
        ]
        if not self.is_bound:  # tomorrow 09:00 to 12:00, in the site's time zone
            self.fields["time_zone"].initial = settings.TIME_ZONE
            day = timezone.localtime(timezone.now(), ZoneInfo(settings.TIME_ZONE)).date()
            day += timedelta(days=1)
            self.fields["opens_at"].initial = f"{day:%Y-%m-%d}T09:00"
            self.fields["closes_at"].initial = f"{day:%Y-%m-%d}T12:00"

    def clean_memory(self) -> int | None:
        text = self.cleaned_data["memory"].strip()
        if not text:
            return None
        try:
            return parse_size(text)
        except ValueError:
            raise forms.ValidationError("Give a size such as 2G or 512M.") from None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        zone = data.get("time_zone")
        for name in ("opens_at", "closes_at"):
            if zone and data.get(name) is not None:
                data[name] = in_zone(data[name], zone)
        return data

    def service_arguments(self) -> dict[str, Any]:
        """``services.create_workshop``'s keyword arguments."""
        data = self.cleaned_data
        source = repository_input(data["repository"])
        ref = data["ref"].strip() or "HEAD"
        if "spec" in source:  # a spec names its ref: its last part
            ref = source["spec"].rstrip("/").rpartition("/")[2] or "HEAD"
        team: Team | None = self.managed.get(data["team"]) if data["team"] else None
        return {
            "title": data["title"], **source, "ref": ref, "urlpath": data["urlpath"],
            "opens_at": data["opens_at"], "closes_at": data["closes_at"],
            "time_zone": data["time_zone"], "seats": data["seats"], "team": team,
            "cpu": data["cpu"], "memory_bytes": data["memory"],
            "session_minutes": data["session_minutes"], "guests": data["guests"],
            "email_domains": data["email_domains"],
            "team_members_only": data["team_members_only"],
            "mount_volumes": data["mount_volumes"],
        }  # fmt: skip


# Where the service's field names go on the form.
SERVICE_FIELDS = {"memory_bytes": "memory", "spec": "repository", "repo_url": "repository"}


class JoinForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, label="Your name",
                           help_text="Shown to your instructor.")  # fmt: skip


class ExtendForm(forms.Form):
    closes_at = forms.DateTimeField(widget=LocalDateTimeInput(), input_formats=[LOCAL_FORMAT])


class SeatsForm(forms.Form):
    add = forms.IntegerField(min_value=1, max_value=1000)


class SessionLengthForm(forms.Form):
    session_minutes = forms.IntegerField(min_value=5, max_value=24 * 60)
