from __future__ import annotations

from types import SimpleNamespace

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.teams.models import Membership, Role, Team


@pytest.fixture
def crew(db):
    """A team with an owner, an admin and a member, and an outsider."""
    team = Team.objects.create(name="Ocean Lab", slug="ocean-lab")
    people = SimpleNamespace(team=team)
    for role in (Role.OWNER, Role.ADMIN, Role.MEMBER):
        user = UserFactory(username=role.value)
        setattr(people, role.value, user)
        membership = Membership.objects.create(team=team, user=user, role=role)
        setattr(people, f"{role.value}_m", membership)
    people.outsider = UserFactory(username="outsider")
    people.anonymous = None
    return people
