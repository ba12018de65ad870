"""Credential services and invariants: ownership constraint, encryption at rest, the order
credentials are tried in, who may use them, and key rotation."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction

from apps.accounts.tests.factories import UserFactory
from apps.repos import crypto, services
from apps.repos.models import Credential
from apps.repos.selectors import can_use_credential, usable_credentials
from apps.teams.models import Membership, Role, Team
from portal.errors import BinderyError

pytestmark = pytest.mark.django_db


def test_a_credential_belongs_to_a_user_or_a_team_never_both_nor_neither(crew):
    token = crypto.encrypt("t")
    for owner in ({"user": crew.member, "team": crew.team}, {}):
        with pytest.raises(IntegrityError), transaction.atomic():
            Credential.objects.create(host="github.com", encrypted_token=token, **owner)
    Credential.objects.create(host="github.com", encrypted_token=token, user=crew.member)
    Credential.objects.create(host="github.com", encrypted_token=token, team=crew.team)
    assert Credential.objects.count() == 2


def test_the_host_is_stored_lower_case(crew):
    with pytest.raises(IntegrityError), transaction.atomic():
        Credential.objects.create(host="GitHub.com", encrypted_token="x", user=crew.member)


def test_credentials_for_offers_a_teams_credential_only_for_that_teams_launches(crew):
    other = Team.objects.create(name="Alpha", slug="alpha")
    Membership.objects.create(team=other, user=crew.member, role=Role.OWNER)
    services.create_credential(crew.owner, host="github.com", token="ocean", team=crew.team)
    services.create_credential(crew.member, host="github.com", token="alpha", team=other)
    services.create_credential(crew.member, host="github.com", token="own")
    services.create_credential(crew.member, host="gitlab.com", token="other-host")
    services.create_credential(crew.outsider, host="github.com", token="outsider")
    # Launching for oneself: one's own credentials only, never a team's.
    assert [c.token for c in services.credentials_for(crew.member, "github.com")] == ["own"]
    # For a team: one's own, then that team's; never another team's.
    tokens = [c.token for c in services.credentials_for(crew.member, "GitHub.com", crew.team)]
    assert tokens == ["own", "ocean"]
    tokens = [c.token for c in services.credentials_for(crew.member, "github.com", other)]
    assert tokens == ["own", "alpha"]
    # A team the user is not in contributes nothing, even when named.
    outsiders_team = Team.objects.create(name="Zed", slug="zed")
    Membership.objects.create(team=outsiders_team, user=crew.outsider, role=Role.OWNER)
    services.create_credential(crew.outsider, host="github.com", token="zed", team=outsiders_team)
    tokens = [c.token for c in services.credentials_for(crew.member, "github.com", outsiders_team)]
    assert tokens == ["own"]
    assert services.credentials_for(None, "github.com") == ()
    assert [c.token for c in services.credentials_for(crew.outsider, "github.com")] == ["outsider"]


def test_git_credential_username_defaults(crew):
    services.create_credential(crew.member, host="github.com", token="zz-secret-zz")
    (credential,) = services.credentials_for(crew.member, "github.com")
    assert credential.username == "x-access-token"
    assert "zz-secret-zz" not in repr(credential)


def test_can_use_credential(crew):
    shared = services.create_credential(crew.admin, host="h.org", token="t", team=crew.team)
    own = services.create_credential(crew.member, host="h.org", token="t")
    for role in ("owner", "admin", "member"):
        assert can_use_credential(getattr(crew, role), shared)
        assert can_use_credential(getattr(crew, role), shared.pk)
    assert not can_use_credential(crew.outsider, shared)
    assert not can_use_credential(None, shared)
    assert can_use_credential(crew.member, own)
    assert not can_use_credential(crew.owner, own)
    assert not can_use_credential(crew.owner, own.pk)
    assert set(usable_credentials(crew.member)) == {shared, own}
    assert set(usable_credentials(crew.outsider)) == set()


def test_only_team_owners_and_admins_add_or_delete_team_credentials(crew):
    with pytest.raises(BinderyError) as caught:
        services.create_credential(crew.member, host="h.org", token="t", team=crew.team)
    assert caught.value.code == "PERMISSION_DENIED"
    with pytest.raises(BinderyError) as caught:
        services.create_credential(crew.outsider, host="h.org", token="t", team=crew.team)
    assert caught.value.code == "NOT_FOUND"
    shared = services.create_credential(crew.admin, host="h.org", token="t", team=crew.team)
    with pytest.raises(BinderyError):
        services.delete_credential(crew.member, shared)
    services.delete_credential(crew.owner, shared)
    assert not Credential.objects.exists()


def test_credential_limit(crew, monkeypatch):
    monkeypatch.setattr(services, "MAX_CREDENTIALS_PER_OWNER", 2)
    services.create_credential(crew.member, host="a.org", token="t")
    services.create_credential(crew.member, host="b.org", token="t")
    with pytest.raises(BinderyError) as caught:
        services.create_credential(crew.member, host="c.org", token="t")
    assert caught.value.code == "CREDENTIAL_LIMIT_REACHED"
    assert Credential.objects.count() == 2


def test_load_git_credential_for_a_deleted_one(crew):
    credential = services.create_credential(crew.member, host="h.org", token="t")
    assert services.load_git_credential(credential.pk).token == "t"
    credential.delete()
    with pytest.raises(BinderyError) as caught:
        services.load_git_credential(credential.pk)
    assert caught.value.code == "CREDENTIAL_GONE"


def test_rotate_encryption_key_re_encrypts_with_the_first_key(crew, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.BINDERY_ENCRYPTION_KEYS = [old]
    first = services.create_credential(crew.member, host="h.org", token="secret-one")
    second = services.create_credential(
        crew.owner, host="h.org", token="secret-two", team=crew.team
    )
    before = dict(Credential.objects.values_list("pk", "encrypted_token"))

    settings.BINDERY_ENCRYPTION_KEYS = [new, old]  # new first: it encrypts, both decrypt
    assert services.load_git_credential(first.pk).token == "secret-one"
    call_command("rotate_encryption_key")
    after = dict(Credential.objects.values_list("pk", "encrypted_token"))
    assert after[first.pk] != before[first.pk] and after[second.pk] != before[second.pk]

    settings.BINDERY_ENCRYPTION_KEYS = [new]  # the old key can now go
    assert services.load_git_credential(first.pk).token == "secret-one"
    assert services.load_git_credential(second.pk).token == "secret-two"
    call_command("rotate_encryption_key")  # safe to run twice
    assert services.load_git_credential(first.pk).token == "secret-one"


def test_rotate_reports_credentials_no_key_opens(crew, settings):
    settings.BINDERY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    lost = services.create_credential(crew.member, host="h.org", token="lost")
    settings.BINDERY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    kept = services.create_credential(crew.member, host="h.org", token="kept")
    with pytest.raises(CommandError) as caught:
        call_command("rotate_encryption_key")
    assert str(lost.pk) in str(caught.value)
    assert services.load_git_credential(kept.pk).token == "kept"
    # An unreadable credential is skipped when resolving, never offered half-decrypted.
    assert [c.token for c in services.credentials_for(crew.member, "h.org")] == ["kept"]
    lost.refresh_from_db()
    with pytest.raises(BinderyError) as unreadable:
        crypto.decrypt(lost.encrypted_token)
    assert unreadable.value.code == "CREDENTIAL_UNREADABLE"


def test_users_are_created_with_distinct_credentials():
    # Two users storing the same token get different ciphertexts (Fernet is randomised).
    a, b = UserFactory(), UserFactory()
    one = services.create_credential(a, host="h.org", token="same")
    two = services.create_credential(b, host="h.org", token="same")
    assert one.encrypted_token != two.encrypted_token
