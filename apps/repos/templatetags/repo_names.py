"""``{% repo_name build %}``, ``{% repo_name session %}``, ``{% spec_name provider spec %}``:
a repository as people read it (partials/repo_name.html), full values on hover."""

from __future__ import annotations

from typing import Any

from django import template

from apps.repos.names import RepoName, name_for, name_for_spec

register = template.Library()


@register.inclusion_tag("partials/repo_name.html")
def repo_name(obj: Any) -> dict[str, RepoName]:
    return {"name": name_for(obj)}


@register.inclusion_tag("partials/repo_name.html")
def spec_name(provider: str, spec: str) -> dict[str, RepoName]:
    return {"name": name_for_spec(provider, spec)}


@register.filter
def repo_label(obj: Any) -> str:
    """The name as plain text (titles, breadcrumbs)."""
    return name_for(obj).label


@register.filter
def repo_place(obj: Any) -> str:
    """Where the repository lives, without ref or commit (a page about every version)."""
    return name_for(obj).place
