"""HTTP to outside services (record providers, doi.org, Software Heritage) with the same
host rules as git: every URL, and every redirect hop, passes ``validation.check_url``;
redirects are followed here, one checked hop at a time, never by requests itself.

No credentials are ever sent (records are public) and the environment is ignored
(``trust_env=False``: no proxies from the environment, no ``~/.netrc``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from django.conf import settings

from apps.repos.errors import ProviderBadResponse, ProviderUnavailable
from apps.repos.validation import check_url

MAX_REDIRECTS = 10
METADATA_MAX_BYTES = 32 * 1024 * 1024
_REDIRECTS = {301, 302, 303, 307, 308}


def timeout() -> float:
    return float(getattr(settings, "BINDERY_HTTP_TIMEOUT", 30))


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.headers["User-Agent"] = f"Bindery (+{settings.SITE_URL})"
    return session


def _send(
    session: requests.Session,
    method: str,
    url: str,
    headers: dict[str, str] | None,
    request_timeout: float | None,
) -> requests.Response:
    try:
        return session.request(
            method,
            url,
            headers=headers,
            allow_redirects=False,
            stream=True,
            timeout=request_timeout or timeout(),
        )
    except requests.Timeout:
        raise ProviderUnavailable(f"{_host(url)} did not answer in time.") from None
    except requests.RequestException:
        raise ProviderUnavailable(f"{_host(url)} could not be reached.") from None


def _next_hop(current: str, response: requests.Response) -> str | None:
    location = response.headers.get("Location")
    if response.status_code not in _REDIRECTS or not location:
        return None
    target = urljoin(current, location)
    check_url(target, what="URL", redirect=True)
    return target


@contextmanager
def open_url(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    request_timeout: float | None = None,
) -> Iterator[requests.Response]:
    """A streamed response for ``url`` after following checked redirects.

    Raises the ``check_url`` errors (RedirectForbidden for a redirect target) and
    ProviderUnavailable when a host cannot be reached.
    """
    check_url(url, what="URL", allow_query=True)
    current = url
    with _session() as session:
        for _ in range(MAX_REDIRECTS + 1):
            response = _send(session, method, current, headers, request_timeout)
            try:
                target = _next_hop(current, response)
                if target is None:
                    yield response
                    return
            finally:
                response.close()
            if response.status_code == 303 or (method == "POST" and response.status_code < 303):
                method = "GET"
            current = target
        raise ProviderBadResponse(f"{_host(url)} redirected too many times.")


def follow_redirects(url: str, accept: Callable[[str], bool]) -> tuple[str | None, int]:
    """Walk the redirects from ``url`` (checking every hop) until a URL that ``accept``s;
    that URL is not fetched. Returns (accepted URL or None, status of the last answer)."""
    check_url(url, what="URL", allow_query=True)
    current = url
    with _session() as session:
        for _ in range(MAX_REDIRECTS + 1):
            if accept(current):
                return current, 0
            response = _send(session, "GET", current, None, None)
            try:
                target = _next_hop(current, response)
            finally:
                response.close()
            if target is None:
                return None, response.status_code
            current = target
    raise ProviderBadResponse(f"{_host(url)} redirected too many times.")


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "The server"
    except ValueError:
        return "The server"


def read_limited(response: requests.Response, limit: int = METADATA_MAX_BYTES) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(chunk_size=65536):
            size += len(chunk)
            if size > limit:
                raise ProviderBadResponse("The server's answer is too large.")
            chunks.append(chunk)
    except requests.RequestException:
        raise ProviderUnavailable("The connection broke while reading the answer.") from None
    return b"".join(chunks)


def fetch_json(url: str, *, method: str = "GET", not_found: Exception | None = None) -> Any:
    """GET (or POST) ``url`` and decode its JSON. A 404/410 raises ``not_found`` when given;
    other non-2xx answers raise ProviderUnavailable (5xx) or ProviderBadResponse."""
    with open_url(url, method=method, headers={"Accept": "application/json"}) as response:
        if response.status_code in (404, 410) and not_found is not None:
            raise not_found
        if response.status_code >= 500 or response.status_code == 429:
            raise ProviderUnavailable(
                f"{_host(url)} answered with an error ({response.status_code}); try again later."
            )
        if not 200 <= response.status_code < 300:
            raise ProviderBadResponse(f"{_host(url)} refused the request ({response.status_code}).")
        body = read_limited(response)
    try:
        return json.loads(body)
    except ValueError:
        raise ProviderBadResponse(f"{_host(url)} did not answer with JSON.") from None
