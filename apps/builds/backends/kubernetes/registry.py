"""Does an image exist? The Docker Registry HTTP API v2, as BinderHub's ``DockerRegistry``
asks it: ``HEAD /v2/<name>/manifests/<tag>`` accepting manifest lists and OCI indexes as well
as single manifests; on 401 with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``
a token is fetched from the realm (with the registry credentials, when set) and the request
made again; ``Basic`` is answered with the credentials. Every request has a timeout; the
environment's proxies and ``~/.netrc`` are ignored (``trust_env=False``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from apps.builds.backends.kubernetes.names import split_image
from portal.errors import BackendError

log = logging.getLogger(__name__)

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
DOCKER_HUB = "https://registry-1.docker.io"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Registry:
    """The registry images are pushed to. ``url`` is its base URL; empty: derived from each
    image's host (``https://<host>``, Docker Hub for none)."""

    url: str = ""
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    timeout: float = 10.0
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    def __post_init__(self) -> None:
        self.session.trust_env = False

    @classmethod
    def from_settings(cls) -> Registry:
        from django.conf import settings

        return cls(
            url=settings.BINDERY_REGISTRY_URL,
            username=settings.BINDERY_REGISTRY_USERNAME,
            password=settings.BINDERY_REGISTRY_PASSWORD,
            timeout=float(settings.BINDERY_K8S_API_TIMEOUT),
        )

    def base_url(self, host: str) -> str:
        if self.url:
            return self.url.rstrip("/")
        return f"https://{host}" if host and host != "docker.io" else DOCKER_HUB

    def image_exists(self, image: str) -> bool:
        """Whether ``image`` (``host/name:tag``) is in the registry.

        Raises BackendError: REGISTRY_UNAVAILABLE (transient: no answer in time, 5xx, 429),
        REGISTRY_DENIED (permanent: 403, or credentials refused by the token service)."""
        host, name, tag = split_image(image)
        url = f"{self.base_url(host)}/v2/{name}/manifests/{tag or 'latest'}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        response = self._send("HEAD", url, headers)
        if response.status_code == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            scheme, _, params = challenge.partition(" ")
            if scheme.lower() == "bearer":
                token = self._token(dict(_CHALLENGE_PARAM.findall(params)), name)
                response = self._send("HEAD", url, {**headers, "Authorization": f"Bearer {token}"})
                if response.status_code == 401:
                    # Docker Hub answers 401, not 404, for a repository that does not exist
                    # yet, even with a token (BinderHub reads it the same way).
                    log.warning("registry refused a token for %s: taken as not there", name)
                    return False
            elif scheme.lower() == "basic" and self.username:
                auth = (self.username, self.password)
                response = self._send("HEAD", url, headers, auth=auth)
        return self._verdict(response, url)

    def _verdict(self, response: requests.Response, url: str) -> bool:
        status = response.status_code
        if status == 200:
            return True
        if status == 404:
            return False
        where = urlsplit(url).netloc
        if status in (401, 403):
            raise BackendError(
                f"The registry at {where} refused to say whether the image exists ({status}): "
                "check BINDERY_REGISTRY_USERNAME and BINDERY_REGISTRY_PASSWORD.",
                code="REGISTRY_DENIED",
            )
        raise BackendError(
            f"The registry at {where} answered {status}; trying again shortly.",
            permanent=False,
            code="REGISTRY_UNAVAILABLE",
        )

    def _token(self, challenge: dict[str, str], name: str) -> str:
        realm = challenge.get("realm", "")
        if urlsplit(realm).scheme not in ("http", "https"):
            raise BackendError(
                f"The registry asked for a token from {realm!r}, which is not an HTTP URL.",
                code="REGISTRY_DENIED",
            )
        params = {"scope": challenge.get("scope") or f"repository:{name}:pull"}
        if challenge.get("service"):
            params["service"] = challenge["service"]
        auth = (self.username, self.password) if self.username else None
        response = self._send("GET", realm, {}, params=params, auth=auth)
        if response.status_code in (401, 403):
            raise BackendError(
                f"The registry's token service ({urlsplit(realm).netloc}) refused the "
                "credentials: check BINDERY_REGISTRY_USERNAME and BINDERY_REGISTRY_PASSWORD.",
                code="REGISTRY_DENIED",
            )
        try:
            response.raise_for_status()
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (requests.RequestException, ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise BackendError(
                f"The registry's token service ({urlsplit(realm).netloc}) gave no token "
                f"({response.status_code}); trying again shortly.",
                permanent=False,
                code="REGISTRY_UNAVAILABLE",
            )
        return token

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        params: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> requests.Response:
        try:
            response = self.session.request(
                method,
                url,
                headers=headers,
                params=params,
                auth=auth,
                allow_redirects=False,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            timed_out = isinstance(exc, requests.Timeout)
            what = "did not answer in time" if timed_out else "could not be reached"
            raise BackendError(
                f"The registry at {urlsplit(url).netloc} {what}; trying again shortly.",
                permanent=False,
                code="REGISTRY_UNAVAILABLE",
            ) from None
        response.close()  # HEAD has no body; a token's was read by .json() when asked
        return response
