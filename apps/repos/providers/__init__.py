"""The repo providers by their mybinder prefix."""

from __future__ import annotations

from apps.repos.errors import ProviderUnknown
from apps.repos.providers.base import ParsedSpec, RepoProvider, Resolution
from apps.repos.providers.git import (
    GistProvider,
    GitHubProvider,
    GitLabProvider,
    GitUrlProvider,
)
from apps.repos.providers.records import (
    CkanProvider,
    DataverseProvider,
    FigshareProvider,
    HydroShareProvider,
    ZenodoProvider,
)
from apps.repos.providers.swh import SoftwareHeritageProvider

PROVIDERS: dict[str, RepoProvider] = {
    p.name: p
    for p in (
        GitHubProvider(),
        GitLabProvider(),
        GistProvider(),
        GitUrlProvider(),
        ZenodoProvider(),
        FigshareProvider(),
        DataverseProvider(),
        HydroShareProvider(),
        CkanProvider(),
        SoftwareHeritageProvider(),
    )
}


def get_provider(name: str) -> RepoProvider:
    provider = PROVIDERS.get(name) if isinstance(name, str) else None
    if provider is None:
        known = ", ".join(PROVIDERS)
        raise ProviderUnknown(f"Unknown repository provider; use one of: {known}.")
    return provider


__all__ = ["PROVIDERS", "ParsedSpec", "RepoProvider", "Resolution", "get_provider"]
