"""The token list costs the same number of queries for one token as for twenty (issue 13)."""

from __future__ import annotations

import pytest

from apps.accounts.services import create_api_token, revoke_api_token
from apps.accounts.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_token_list_queries_do_not_grow(token_client, django_assert_num_queries):
    user = UserFactory()
    client = token_client(user)  # one token: the client's own
    client.get("/api/v1/tokens/")  # the first request of a token records its use (once a minute)
    for rows in (1, 20):
        with django_assert_num_queries(3):  # the token, the count, the page
            response = client.get("/api/v1/tokens/")
        assert response.status_code == 200
        assert len(response.json()["results"]) == rows
        for n in range(19):
            issued = create_api_token(user, f"extra {n}")
            if n % 3 == 0:
                revoke_api_token(issued.token)
