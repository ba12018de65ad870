from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.accounts import tokens
from apps.accounts.models import ApiToken
from apps.accounts.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_create_api_token_prints_working_token_last(api):
    user = UserFactory(username="carol")
    out = StringIO()
    call_command("create_api_token", "carol", stdout=out, stderr=StringIO())
    secret = out.getvalue().strip().splitlines()[-1]
    assert tokens.is_well_formed(secret)
    assert ApiToken.objects.get(user=user).digest == tokens.digest(secret)
    api.credentials(HTTP_AUTHORIZATION=f"token {secret}")
    assert api.get("/api/v1/me/").json()["username"] == "carol"


def test_create_api_token_unknown_user():
    with pytest.raises(CommandError, match="No user named"):
        call_command("create_api_token", "nobody", stdout=StringIO(), stderr=StringIO())
