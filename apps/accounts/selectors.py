"""Reads of accounts data that also authorize."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import ApiToken, User
from portal.errors import NotFound
from portal.utils import as_id


def tokens_for_user(user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user)


def get_token_for_user(user: User, token_id: int | str) -> ApiToken:
    token = ApiToken.objects.filter(user=user, pk=as_id(token_id)).first()
    if token is None:
        raise NotFound("No such token.")
    return token
