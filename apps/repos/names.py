"""Repository names for people: ``host/owner/repo @ ref (short commit)``.

Pages never show an encoded spec (``git/http%3A%2F%2F…/HEAD``); they show where the code
comes from, the ref that was asked for and, once resolved, the commit it pinned. The full
values (URL, ref, whole commit) travel along for a tooltip and for copying.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from apps.repos.providers import get_provider
from portal.errors import BinderyError

SHORT_COMMIT = 7


@dataclass(frozen=True)
class RepoName:
    place: str  # "github.com/org/repo", "127.0.0.1:8080/demo", "zenodo 10.5281/zenodo.1"
    ref: str  # what was asked for: "main", "HEAD", a tag
    commit: str = ""  # the resolved commit or record version, in full
    url: str = ""  # where it lives (clone URL or landing page)

    @property
    def short_commit(self) -> str:
        if not self.commit or self.commit == self.ref:
            return ""
        return self.commit[:SHORT_COMMIT] if len(self.commit) == 40 else self.commit

    @property
    def label(self) -> str:
        text = f"{self.place} @ {self.ref}" if self.ref else self.place
        return f"{text} ({self.short_commit})" if self.short_commit else text

    @property
    def full(self) -> str:
        """Every value in full, for a tooltip or the clipboard."""
        parts = [self.url or self.place]
        if self.ref:
            parts.append(f"ref {self.ref}")
        if self.commit and self.commit != self.ref:
            parts.append(f"commit {self.commit}")
        return " · ".join(parts)


def place_of_url(url: str) -> str:
    """``https://github.com/org/repo.git`` → ``github.com/org/repo``."""
    parts = urlsplit(url)
    if not parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[-1].lower()
    path = unquote(parts.path).rstrip("/").removesuffix(".git")
    return host + path


def name_for_spec(provider: str, spec: str) -> RepoName:
    """The name of ``provider``/``spec`` before it is resolved (no network). A spec that
    does not parse is shown decoded, as given (the launch says why it is refused)."""
    try:
        values: dict[str, Any] = dict(get_provider(provider).parse(spec).values)
    except BinderyError:
        return RepoName(place=unquote(spec), ref="")
    if "url" in values:
        return RepoName(
            place=place_of_url(values["url"]), ref=values.get("ref", ""), url=values["url"]
        )
    record = values.get("doi") or values.get("record") or values.get("id") or unquote(spec)
    return RepoName(place=f"{provider} {record}", ref="")


def name_for_resolved(resolved: dict[str, Any]) -> RepoName:
    """The name of a resolved repository (``Build.resolved``: a ResolvedRepo as JSON)."""
    url = str(resolved.get("repo_url") or "")
    if resolved.get("kind") == "git" and url:
        place = place_of_url(url)
        ref = str(resolved.get("unresolved_ref") or "")
    else:
        place = f"{resolved.get('provider', '')} {resolved.get('display_name', '')}".strip()
        place = str(resolved.get("display_name") or place)
        ref = ""
    return RepoName(place=place, ref=ref, commit=str(resolved.get("resolved_ref") or ""), url=url)


def name_for(obj: Any) -> RepoName:
    """The name of a Build or a Session (its build once resolved, else its spec)."""
    build = getattr(obj, "build", None)
    if build is not None and getattr(build, "resolved", None):
        return name_for_resolved(build.resolved)
    resolved = getattr(obj, "resolved", None)
    if isinstance(resolved, dict) and resolved:
        return name_for_resolved(resolved)
    return name_for_spec(str(obj.provider), str(obj.spec))
