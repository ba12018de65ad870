"""Every Kubernetes API call of the builder and the cleaner, in one place: each one carries
``_request_timeout``, "already exists" on create and "not found" on delete are answers, not
errors, and every other failure becomes a ``BackendError`` that says what to check
(transient for an unreachable or overloaded API server, permanent for a refusal).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar, cast

import urllib3
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from portal.errors import BackendError

log = logging.getLogger(__name__)
T = TypeVar("T")


class LogNotReady(Exception):
    """The pod's container has not started: there is no log to follow yet."""


@lru_cache(maxsize=4)
def api_client(kubeconfig: str) -> client.ApiClient:
    """One client per kubeconfig path ("": the pod's service account), for the builder and
    the session backend alike."""
    if kubeconfig:
        return kube_config.new_client_from_config(config_file=kubeconfig, persist_config=False)
    configuration = client.Configuration()
    kube_config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)


def core_api() -> client.CoreV1Api:
    """The CoreV1 API from BINDERY_K8S_KUBECONFIG, or the pod's service account when it is
    empty. Reads files only; the first request contacts the cluster. Raises BackendError
    (permanent, K8S_MISCONFIGURED) when neither is usable."""
    from django.conf import settings

    try:
        return client.CoreV1Api(api_client(settings.BINDERY_K8S_KUBECONFIG))
    except (kube_config.ConfigException, OSError, ValueError) as exc:
        where = settings.BINDERY_K8S_KUBECONFIG or "the in-cluster service account"
        raise BackendError(
            f"The Kubernetes API configuration ({where}) cannot be used: {exc}",
            code="K8S_MISCONFIGURED",
        ) from None


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or exc.status)


M = TypeVar("M", client.V1Pod, client.V1Secret, client.V1DeleteOptions)


def _model(kind: type[M], manifest: dict[str, Any]) -> M:
    """``manifest`` as the client's model, which the client serializes back to the API."""
    model = kind.from_dict(manifest)
    assert model is not None
    return model


_TRANSPORT = (urllib3.exceptions.HTTPError, OSError)  # no answer: refused, reset, timed out


class Cluster:
    """The namespace the build pods live in, through ``api``; ``timeout`` (seconds) bounds
    every request (a log stream: its connection and each read)."""

    def __init__(self, api: client.CoreV1Api, namespace: str, timeout: float) -> None:
        self.api, self.namespace, self.timeout = api, namespace, timeout

    def _call(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return call(*args, **kwargs, _request_timeout=self.timeout)
        except ApiException as exc:
            raise self._error(what, exc) from None
        except _TRANSPORT as exc:
            raise self._unavailable(what, exc) from None

    def _unavailable(self, what: str, exc: BaseException) -> BackendError:
        log.warning("kubernetes API: could not %s: %r", what, exc)
        return BackendError(
            f"The Kubernetes API did not answer (to {what}); trying again shortly.",
            permanent=False,
            code="K8S_UNAVAILABLE",
        )

    def _error(self, what: str, exc: ApiException) -> BackendError:
        message = _status_message(exc)
        if exc.status in (401, 403):
            return BackendError(
                f"The Kubernetes API refused to {what} in namespace {self.namespace} "
                f"({exc.status}: {message}); check the worker's service account and RBAC.",
                code="K8S_FORBIDDEN",
            )
        if exc.status in (400, 404, 405, 422):
            return BackendError(
                f"The Kubernetes API could not {what} ({exc.status}: {message}).",
                code="K8S_REJECTED",
            )
        return BackendError(
            f"The Kubernetes API failed to {what} ({exc.status}: {message}); trying again shortly.",
            permanent=False,
            code="K8S_UNAVAILABLE",
        )

    # -- pods ------------------------------------------------------------------------------

    def create_pod(self, manifest: dict[str, Any]) -> client.V1Pod | None:
        """The created pod, or None when one of that name exists (409 AlreadyExists)."""
        what = "create a build pod"
        try:
            pod: client.V1Pod = self.api.create_namespaced_pod(
                self.namespace, _model(client.V1Pod, manifest), _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise self._error(what, exc) from None
        except _TRANSPORT as exc:
            raise self._unavailable(what, exc) from None
        return pod

    def read_pod(self, name: str) -> client.V1Pod | None:
        """The pod ``name``, or None when there is none."""
        what = "read a build pod"
        try:
            pod: client.V1Pod = self.api.read_namespaced_pod(
                name, self.namespace, _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._error(what, exc) from None
        except _TRANSPORT as exc:
            raise self._unavailable(what, exc) from None
        return pod

    def delete_pod(self, name: str, uid: str | None = None) -> bool:
        """Delete the pod ``name`` at once (only the one with ``uid``, when given). False
        when it was gone already or is another pod by now."""
        what = "delete a build pod"
        body: dict[str, Any] = {"gracePeriodSeconds": 0}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.api.delete_namespaced_pod(
                name,
                self.namespace,
                body=_model(client.V1DeleteOptions, body),
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or the uid precondition failed
                return False
            raise self._error(what, exc) from None
        except _TRANSPORT as exc:
            raise self._unavailable(what, exc) from None
        return True

    def list_pods(self, selector: str) -> list[client.V1Pod]:
        found = self._call(
            "list build pods", self.api.list_namespaced_pod, self.namespace,
            label_selector=selector,
        )  # fmt: skip
        return list(found.items)

    def open_log(self, name: str, container: str, read_timeout: float) -> urllib3.HTTPResponse:
        """The pod's log from its start, followed, each line prefixed with its timestamp;
        ``read_timeout``: the longest silence before a read gives up. Raises LogNotReady
        while the container has not started, BackendError otherwise (BUILD_POD_LOST when
        the pod is gone)."""
        what = "read a build pod's log"
        try:
            response: Any = self.api.read_namespaced_pod_log(
                name,
                self.namespace,
                container=container,
                follow=True,
                timestamps=True,
                _preload_content=False,
                _request_timeout=(self.timeout, read_timeout),
            )
        except ApiException as exc:
            if exc.status == 400:  # "container ... is waiting to start"
                raise LogNotReady(_status_message(exc)) from None
            if exc.status == 404:
                raise BackendError(
                    f"The build pod {name} is gone.", permanent=False, code="BUILD_POD_LOST"
                ) from None
            raise self._error(what, exc) from None
        except _TRANSPORT as exc:
            raise self._unavailable(what, exc) from None
        # _preload_content=False: the response itself, not the text (the annotation's "str")
        return cast(urllib3.HTTPResponse, response)

    # -- secrets ---------------------------------------------------------------------------

    def create_secret(self, manifest: dict[str, Any]) -> None:
        self._call(
            "create a build's credential Secret",
            self.api.create_namespaced_secret, self.namespace, _model(client.V1Secret, manifest),
        )  # fmt: skip

    def own_secret(self, name: str, patch: dict[str, Any]) -> None:
        self._call(
            "give a credential Secret its pod as owner",
            self.api.patch_namespaced_secret, name, self.namespace, patch,
        )  # fmt: skip

    def delete_secret(self, name: str) -> bool:
        """False when it was gone already."""
        what = "delete a credential Secret"
        try:
            self.api.delete_namespaced_secret(name, self.namespace, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise self._error(what, exc) from None
        except _TRANSPORT as exc:
            raise self._unavailable(what, exc) from None
        return True

    def list_secrets(self, selector: str) -> list[client.V1Secret]:
        found = self._call(
            "list credential Secrets", self.api.list_namespaced_secret, self.namespace,
            label_selector=selector,
        )  # fmt: skip
        return list(found.items)
