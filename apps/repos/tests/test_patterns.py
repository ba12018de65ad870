"""Per-provider ban and allow patterns (BinderHub's banned_specs / allowed_specs), checked
before anything is contacted: the real loopback git server sees no request."""

from __future__ import annotations

import pytest

from apps.repos import services
from portal.errors import BinderyError

pytestmark = pytest.mark.django_db


@pytest.fixture
def server(hosted_on_git_server):
    for name in ("evil-org/tool", "good-org/tool", "other/tool"):
        if not (hosted_on_git_server.root / "repos" / f"{name}.git").exists():
            hosted_on_git_server.create_repo(name, {"a": "b"})
    return hosted_on_git_server


def refused(server, call, code):
    before = len(server.requests)
    with pytest.raises(BinderyError) as caught:
        call()
    assert caught.value.code == code
    assert caught.value.status == 403
    assert len(server.requests) == before


@pytest.mark.parametrize(
    "spec", ["evil-org/tool/main", "EVIL-ORG/tool/main", "evil-org/tool.git/main"]
)
def test_banned_gh_spec(server, settings, spec):
    settings.BINDERY_BANNED_SPECS = {"gh": ["^evil-org/.*"]}
    refused(server, lambda: services.resolve("gh", spec, None), "SPEC_BANNED")


def test_ban_applies_to_pasted_urls(server, settings):
    settings.BINDERY_BANNED_SPECS = {"gh": ["^evil-org/.*"]}
    refused(
        server,
        lambda: services.resolve_url(f"{server.base_url}/evil-org/tool", "main", None),
        "SPEC_BANNED",
    )


def test_ban_is_per_provider(server, settings):
    settings.BINDERY_BANNED_SPECS = {"gl": ["^evil-org"], "zenodo": [".*"]}
    assert services.resolve("gh", "evil-org/tool/main", None).resolved_ref


def test_ban_sees_through_another_escaping(server, settings):
    # %2D is '-': the canonical form 'evil-org%2Ftool/main' matches the ban.
    settings.BINDERY_BANNED_SPECS = {"gl": ["^evil-org%2F"]}
    for spec in ("evil-org%2Ftool/main", "evil%2Dorg%2Ftool/main", "evil-org%2ftool/main"):
        refused(server, lambda spec=spec: services.resolve("gl", spec, None), "SPEC_BANNED")


def test_allow_list_refuses_everything_else(server, settings):
    settings.BINDERY_ALLOWED_SPECS = {"gh": ["^good-org/"]}
    refused(server, lambda: services.resolve("gh", "other/tool/main", None), "SPEC_NOT_ALLOWED")
    assert services.resolve("gh", "good-org/tool/main", None).resolved_ref


def test_ban_wins_over_allow(server, settings):
    settings.BINDERY_ALLOWED_SPECS = {"gh": [".*"]}
    settings.BINDERY_BANNED_SPECS = {"gh": ["^good-org/tool/main$"]}
    refused(server, lambda: services.resolve("gh", "good-org/tool/main", None), "SPEC_BANNED")


def test_allow_list_of_one_provider_leaves_others_open(server, settings):
    settings.BINDERY_ALLOWED_SPECS = {"gl": ["^nothing$"]}
    assert services.resolve("gh", "other/tool/main", None).resolved_ref


def test_record_providers_are_banned_by_their_canonical_doi(settings, provider_urls):
    settings.BINDERY_BANNED_SPECS = {"zenodo": [r"^10\.5281/zenodo\.666$"]}
    for spec in (
        "10.5281/zenodo.666",
        "doi:10.5281/zenodo.666",
        "https://doi.org/10.5281/zenodo.666",
    ):
        with pytest.raises(BinderyError) as caught:
            services.resolve("zenodo", spec, None)
        assert caught.value.code == "SPEC_BANNED"
