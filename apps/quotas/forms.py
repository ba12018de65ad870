"""The quota form: one field per limit, as people type them ("2G", "1.5", "40"; blank =
unlimited), turned into the API's units for ``set_team_quota`` / ``set_member_quota``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import forms

from apps.builds.backends.disk import parse_size
from apps.quotas.limits import INTEGER, NAMES
from apps.quotas.presentation import FIELD_UNITS, SIZES, TITLES, form_value

_UNREADABLE = {
    "size": "Enter a size such as 2G or 500M, or leave it blank for unlimited.",
    "whole": "Enter a whole number, or leave it blank for unlimited.",
    "number": "Enter a number such as 1 or 1.5, or leave it blank for unlimited.",
}


def parse_field(name: str, text: str) -> float | int | None:
    """A field's text in the API's units (None when blank). Raises ValueError with the
    sentence to show beside the field."""
    text = text.strip()
    if not text:
        return None
    if name in SIZES:
        try:
            return parse_size(text)
        except ValueError:
            raise ValueError(_UNREADABLE["size"]) from None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(_UNREADABLE["whole" if name in INTEGER else "number"]) from None
    if name in INTEGER or value.is_integer():
        if not value.is_integer():
            raise ValueError(_UNREADABLE["whole"])
        return int(value)
    return value


class LimitsForm(forms.Form):
    """Every limit, pre-filled with what binds now (``current``). ``changes()`` is what the
    person changed, so a limit left as it was is not written (it keeps following the site's
    default); a field the request does not send is left unchanged too."""

    def __init__(self, *args: Any, current: Mapping[str, float | int | None], **kwargs: Any):
        kwargs.setdefault("initial", {name: form_value(name, current.get(name)) for name in NAMES})
        super().__init__(*args, **kwargs)
        for name in NAMES:
            self.fields[name] = forms.CharField(
                required=False, max_length=40, label=TITLES[name], help_text=FIELD_UNITS[name]
            )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name in NAMES:
            key = self.add_prefix(name)
            if key not in self.data:
                continue  # not sent: unchanged, as a PUT that omits it
            try:
                cleaned[name] = parse_field(name, str(self.data.get(key, "") or ""))
            except ValueError as exc:
                self.add_error(name, str(exc))
        return cleaned

    def changes(self) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {}
        for name in NAMES:
            if self.add_prefix(name) not in self.data or name not in self.cleaned_data:
                continue
            try:
                before = parse_field(name, str(self.initial.get(name, "")))
            except ValueError:
                before = None
            if self.cleaned_data.get(name) != before:
                out[name] = self.cleaned_data.get(name)
        return out
