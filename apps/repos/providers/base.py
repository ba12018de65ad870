"""The repo provider interface (BinderHub's ``RepoProvider``, without its class state).

A provider turns a spec (the part after ``/v2/<provider>/``) into a ``ResolvedRepo``:

- ``parse(spec)`` checks the spec's syntax and every value in it (refs, URLs, names) and
  touches nothing outside this process;
- ``resolve(parsed, credentials)`` asks the outside world (git ls-remote, an HTTP API) for
  the immutable version. Only git providers use ``credentials``.

Providers take and return plain dataclasses (no models), so they test without a database.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings

from apps.repos.errors import ProviderBadResponse, SpecInvalid
from apps.repos.types import GitCredential, ResolvedRepo
from apps.repos.validation import check_text

# A path segment of an owner, repository, group or gist: what GitHub and GitLab allow,
# never '.', '..' or a leading '-'.
_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class ParsedSpec:
    """A syntactically checked spec. ``canonical`` is the spec rebuilt from its parsed parts
    (ban/allow patterns are matched against it as well as against the spec as given)."""

    provider: str
    spec: str
    canonical: str
    values: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolution:
    repo: ResolvedRepo
    credential: GitCredential | None = None  # the credential that could read the repo


class RepoProvider(Protocol):
    name: str
    label: str  # for people: "GitHub", "Zenodo DOI"...
    uses_credentials: bool

    def parse(self, spec: str) -> ParsedSpec:
        """Check ``spec`` without any network access. Raises the input errors."""
        ...

    def credential_host(self, parsed: ParsedSpec) -> str:
        """``host[:port]`` whose credentials may be tried ("" for none)."""
        ...

    def resolve(self, parsed: ParsedSpec, credentials: Sequence[GitCredential]) -> Resolution:
        """Resolve to an immutable version. Raises RepoNotFoundOrPrivate, RefNotFound,
        RecordNotFound, HostForbidden, ProviderUnavailable... Safe to call twice."""
        ...


def provider_url(name: str) -> str:
    """The operator's base URL for a hosted provider, without a trailing slash."""
    try:
        return settings.BINDERY_PROVIDER_URLS[name].rstrip("/")
    except KeyError:
        raise ProviderBadResponse(
            f"The site has no address configured for the {name} provider."
        ) from None


def check_name(value: str, what: str) -> str:
    check_text(value, what=what, max_length=100)
    if not _NAME.match(value) or value in (".", ".."):
        raise SpecInvalid(
            f"{value!r} is not a valid {what}: use letters, digits, '.', '_' and '-', "
            "not starting with '-'."
        )
    return value


def strip_suffix(text: str, suffix: str) -> str:
    return text[: -len(suffix)] if text.endswith(suffix) else text


def get_path(data: Any, *keys: str | int) -> Any:
    """``data[k1][k2]...`` or ProviderBadResponse when the answer has another shape."""
    for key in keys:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            raise ProviderBadResponse(
                "The repository host answered in an unexpected format."
            ) from None
    return data
