"""Kubernetes sessions without a cluster: the pod KubeSpawner would create, the claims the
portal would create, and the hub runhub would start.

What is real: KubeSpawner 7.1's own ``get_pod_manifest()`` on :class:`BinderyKubeSpawner`,
configured from exactly what ``portal.hubconfig.hub_config()`` generates; the launch
options the backend signs for a ``ServerSpec`` the services derive from real rows; the
kubernetes client (its HTTP, its serialisation, its errors); JupyterHub started by
``manage.py runhub``; the Kubernetes OpenAPI schemas (``kubernetes-validate``, strict).

What is a double: :class:`KubeDouble`, a small HTTP server on 127.0.0.1 that speaks the
Kubernetes API's PersistentVolumeClaim paths and status codes (create 201 / 409
AlreadyExists, read 200 / 404, delete 200 / 404, with real ``Status`` bodies) and checks
every claim posted against the schemas. It does not schedule, provision or mount anything:
"binding" a claim is the test setting ``status.capacity``. KubeSpawner is constructed with
``_mock=True`` (its own test hook: a stand-in hub object) and never calls the API here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlsplit

import kubernetes_asyncio.client
import kubernetes_asyncio.config.kube_config
import kubernetes_validate
import pytest
import requests
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.urls import reverse
from jupyterhub import orm
from tornado import web
from traitlets.config import Config

from apps.accounts.models import User
from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.sessions import services
from apps.sessions.backends import get_session_backend
from apps.sessions.backends.base import VolumeRef
from apps.sessions.backends.kubernetes.backend import (
    SPAWNER,
    ClusterUnavailable,
    KubernetesSessions,
)
from apps.sessions.backends.kubernetes.options import KubeLaunchOptions
from apps.sessions.backends.kubernetes.spawner import BinderyKubeSpawner
from apps.sessions.contract import InvalidLaunchOptions, sign_user_options, signing_key
from apps.sessions.models import Session
from apps.teams.models import Membership, Role, Team
from portal.hubconfig import hub_config

K8S_VERSION = kubernetes_validate.utils.latest_version()  # the newest the package knows
NAMESPACE = "bindery"
PREFIX = "registry.example.org/bindery/"
IMAGE = f"{PREFIX}org-analysis-1a2b3c4d:0123456789abcdef0123456789abcdef"
GiB = 1024**3
BASE_DIR = Path(django_settings.BASE_DIR)
PVC_PATH = re.compile(
    r"/api/v1/namespaces/(?P<ns>[a-z0-9-]+)/persistentvolumeclaims(?:/(?P<name>[a-z0-9.-]+))?"
)


def validate(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


# --- the Kubernetes API double ------------------------------------------------------------


def status_body(code: int, reason: str, message: str, name: str = "") -> dict[str, Any]:
    """A ``Status`` as the API server sends with an error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": name, "kind": "persistentvolumeclaims"},
        "code": code,
    }


class KubeDouble:
    """PersistentVolumeClaims in namespaces, over HTTP on 127.0.0.1 (see the module doc)."""

    def __init__(self) -> None:
        self.claims: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.posted: list[dict[str, Any]] = []
        self.invalid: list[str] = []
        self.refuse = 0  # answer everything with this status (403: RBAC)
        self.silent = False  # answer nothing until closed (a hung API server)
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Handler,), {"kube": self}))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def kubeconfig(self, path: Path, url: str | None = None) -> Path:
        """A kubeconfig for this double (or for ``url``), as an operator would write one."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "double", "cluster": {"server": url or self.url}}],
            "users": [{"name": "portal", "user": {"token": "not-a-real-token"}}],
            "contexts": [
                {
                    "name": "double",
                    "context": {"cluster": "double", "user": "portal", "namespace": NAMESPACE},
                }
            ],
            "current-context": "double",
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    def bind(self, name: str, capacity: str) -> None:
        """What a provisioner does: the claim is Bound with the capacity it got."""
        with self.lock:
            claim = self.claims[(NAMESPACE, name)]
            claim["spec"]["volumeName"] = f"pvc-{claim['metadata']['uid']}"
            claim["status"] = {
                "phase": "Bound",
                "accessModes": claim["spec"]["accessModes"],
                "capacity": {"storage": capacity},
            }

    def close(self) -> None:
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    kube: KubeDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self._handle("POST")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        kube = self.kube
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        path = urlsplit(self.path).path
        kube.requests.append((method, path))
        if kube.silent:
            kube.closed.wait()
            self.close_connection = True
            return
        if kube.refuse:
            message = (
                'persistentvolumeclaims is forbidden: User "system:serviceaccount:bindery:'
                'portal" cannot access resource "persistentvolumeclaims" in the namespace'
            )
            return self._reply(kube.refuse, status_body(kube.refuse, "Forbidden", message))
        match = PVC_PATH.fullmatch(path)
        if not match:
            return self._reply(404, status_body(404, "NotFound", "the server could not find it"))
        namespace, name = match["ns"], match["name"]
        with kube.lock:
            if method == "POST" and name is None:
                return self._create(namespace, body)
            key = (namespace, name)
            claim = kube.claims.get(key)
            if claim is None:
                message = f'persistentvolumeclaims "{name}" not found'
                return self._reply(404, status_body(404, "NotFound", message, name))
            if method == "GET":
                return self._reply(200, claim)
            if method == "DELETE":
                del kube.claims[key]  # no pod uses it: pvc-protection lets it go at once
                return self._reply(200, {**claim, "status": {"phase": claim["status"]["phase"]}})
        self._reply(405, status_body(405, "MethodNotAllowed", "method not allowed"))

    def _create(self, namespace: str, body: Any) -> None:
        kube = self.kube
        kube.posted.append(body)
        try:
            validate(body)
        except Exception as exc:  # what the API server's validation would refuse
            kube.invalid.append(str(exc))
            return self._reply(422, status_body(422, "Invalid", str(exc)))
        name = body["metadata"]["name"]
        if (namespace, name) in kube.claims:
            message = f'persistentvolumeclaims "{name}" already exists'
            return self._reply(409, status_body(409, "AlreadyExists", message, name))
        claim = {
            **body,
            "metadata": {
                **body["metadata"],
                "namespace": namespace,
                "uid": f"00000000-0000-4000-8000-{len(kube.posted):012d}",
                "resourceVersion": str(len(kube.posted)),
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "finalizers": ["kubernetes.io/pvc-protection"],
            },
            "spec": {"volumeMode": "Filesystem", **body["spec"]},
            "status": {"phase": "Pending"},
        }
        kube.claims[(namespace, name)] = claim
        self._reply(201, claim)


@pytest.fixture
def kube(settings: Any, tmp_path: Path) -> Iterator[KubeDouble]:
    """The double, and settings for the kubernetes backend pointing the client at it."""
    double = KubeDouble()
    settings.BINDERY_BACKEND = "kubernetes"
    settings.BINDERY_K8S_KUBECONFIG = str(double.kubeconfig(tmp_path / "kubeconfig"))
    settings.BINDERY_K8S_NAMESPACE = NAMESPACE
    settings.BINDERY_K8S_API_TIMEOUT = 5.0
    settings.BINDERY_REGISTRY_PREFIX = PREFIX
    settings.BINDERY_K8S_STORAGE_CLASS = "standard-rwo"
    settings.BINDERY_K8S_TEAM_STORAGE_CLASS = "shared-rwx"
    settings.BINDERY_K8S_VOLUME_SIZE = "5Gi"
    settings.BINDERY_K8S_IMAGE_PULL_SECRET = "registry-pull"
    settings.BINDERY_K8S_SESSION_NODE_SELECTOR = {"bindery.io/pool": "sessions"}
    settings.BINDERY_K8S_SESSION_TOLERATIONS = [
        {"key": "bindery.io/sessions", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}
    ]
    settings.BINDERY_HUB_DIR = tmp_path / "hub"
    settings.BINDERY_HUB_API_URL = "http://bindery-hub:8081/hub/api"
    settings.BINDERY_HUB_TOKEN = "portal-token-for-the-kubernetes-tests"
    yield double
    double.close()


# --- the pod KubeSpawner makes (issue 10, 5c) ---------------------------------------------


@pytest.fixture
def lab_session(db: None) -> Session:
    """A team launch by a member: a home volume and the team's, an image build."""
    user = cast(User, UserFactory(username="ada"))
    team = Team.objects.create(name="Lab", slug="lab")
    Membership.objects.create(team=team, user=user, role=Role.MEMBER)
    build = Build.objects.create(
        provider="gh", spec="org/analysis/main", repo_url="https://github.com/org/analysis",
        repo_slug="org-analysis", display_name="org/analysis", resolved_ref="a" * 40,
        resolved={
            "provider": "gh", "spec": "org/analysis/main", "repo_url": "https://github.com/org/analysis",
            "ref_url": f"https://github.com/org/analysis/tree/{'a' * 40}",
            "persistent_spec": f"gh/org/analysis/{'a' * 40}",
        },
        build_key="k8s", status="ready",
        result={
            "environment_key": "0123456789abcdef0123456789abcdef", "environment_path": IMAGE,
            "checkout_path": "", "python_version": "", "config_files": [], "packages": [],
        },
    )  # fmt: skip
    return Session.objects.create(
        user=user, team=team, build=build, hub_user=user.hub_name, provider="gh",
        spec="org/analysis/main", urlpath="lab/tree/{notes}.ipynb", status="launching",
        memory_bytes=2 * GiB, max_processes=256,
    )  # fmt: skip


def _spawner(config: dict[str, Any], hub_user: str, server_name: str) -> BinderyKubeSpawner:
    """The spawner as the hub builds it from the config (inside a running loop: KubeSpawner
    makes its asyncio client there)."""
    user = SimpleNamespace(name=hub_user, id=1, url=f"/user/{hub_user}/")
    return BinderyKubeSpawner(
        _mock=True, user=user, orm_spawner=orm.Spawner(name=server_name), config=Config(config)
    )


def pod_for(
    config: dict[str, Any], user_options: Any, hub_user: str, server_name: str
) -> dict[str, Any]:
    """KubeSpawner's pod for these options, as the JSON it would send."""

    async def make() -> dict[str, Any]:
        spawner = _spawner(config, hub_user, server_name)
        spawner.user_options = user_options
        await spawner.load_user_options()
        pod = await spawner.get_pod_manifest()
        async with kubernetes_asyncio.client.ApiClient() as api:  # what KubeSpawner sends
            manifest: dict[str, Any] = api.sanitize_for_serialization(pod)
        return manifest

    return asyncio.run(make())


def refusal(
    config: dict[str, Any], user_options: Any, hub_user: str, server_name: str
) -> web.HTTPError:
    """The hub's answer to options it must refuse, from both hooks (apply_user_options,
    before start; load_user_options, in start); nothing of them reaches the spawner."""

    async def refuse() -> web.HTTPError:
        spawner = _spawner(config, hub_user, server_name)
        default_image = spawner.image
        spawner.user_options = user_options
        with pytest.raises(web.HTTPError) as early:
            await spawner._run_apply_user_options(user_options)
        with pytest.raises(web.HTTPError) as caught:
            await spawner.load_user_options()
        assert early.value.status_code == caught.value.status_code
        assert (spawner.image, spawner.volumes, spawner.launch_options) == (default_image, [], None)
        return caught.value

    return asyncio.run(refuse())


@pytest.fixture
def hub_kubeconfig(kube: KubeDouble, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """KubeSpawner (kubernetes_asyncio) loads ~/.kube/config unless in a cluster: here the
    double's (it is never called; KubeSpawner reads the config when constructed)."""
    path = kube.kubeconfig(tmp_path / "hub-kubeconfig")
    monkeypatch.setattr(
        kubernetes_asyncio.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path)
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_pod_from_the_generated_config_is_valid_and_runs_what_was_signed(
    kube: KubeDouble, hub_kubeconfig: None, lab_session: Session
) -> None:
    config = hub_config()
    assert config["JupyterHub"]["spawner_class"] == SPAWNER
    assert "BinderySpawner" not in config  # nothing of the local spawner's
    spec = services.server_spec(lab_session)
    options = get_session_backend().launch_options(spec)
    assert set(options) == {"payload", "signature"}
    user, server = lab_session.hub_user, lab_session.server_name
    pod = pod_for(config, options, user, server)
    validate(pod)

    spec_ = pod["spec"]
    (container,) = spec_["containers"]
    assert container["image"] == IMAGE
    assert container["args"] == ["jupyterhub-singleuser"]  # after repo2docker's entrypoint
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["resources"] == {
        "limits": {"memory": 2 * GiB},
        "requests": {"memory": 2 * GiB},  # no CPU limit without one in the quota
    }
    assert spec_["volumes"] == [
        {"name": claim, "persistentVolumeClaim": {"claimName": claim}}
        for claim in _expected_claims(lab_session)
    ]
    assert [(m["name"], m["mountPath"]) for m in container["volumeMounts"]] == [
        (f"bindery-users-{lab_session.user_id}", "/home/jovyan/persistent"),
        (f"bindery-teams-{lab_session.team_id}", "/home/jovyan/persistent/teams/lab"),
    ]
    env = _env(container)
    assert env["BINDER_REPO_URL"] == "https://github.com/org/analysis"
    assert env["BINDER_REF_URL"] == f"https://github.com/org/analysis/tree/{'a' * 40}"
    assert env["BINDER_LAUNCH_HOST"] == django_settings.SITE_URL + "/"
    assert env["BINDER_REQUEST"] == "v2/gh/org/analysis/main"
    assert env["BINDER_PERSISTENT_REQUEST"] == f"v2/gh/org/analysis/{'a' * 40}"
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/lab/tree/{notes}.ipynb"  # not read as a template
    assert env["JUPYTERHUB_API_URL"].startswith("http://bindery-hub:8081/")  # the hub's Service
    assert env["JUPYTERHUB_USER"] == user and env["JUPYTERHUB_SERVER_NAME"] == server
    assert env["JUPYTERHUB_ALLOW_TOKEN_IN_URL"] == "1"

    assert spec_["securityContext"] == {
        "fsGroup": 100,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "runAsUser": 1000,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert spec_["automountServiceAccountToken"] is False
    assert "privileged" not in container["securityContext"]
    assert spec_["nodeSelector"] == {"bindery.io/pool": "sessions"}
    assert spec_["tolerations"] == django_settings.BINDERY_K8S_SESSION_TOLERATIONS
    assert spec_["imagePullSecrets"] == [{"name": "registry-pull"}]
    assert pod["metadata"]["name"] == f"jupyter-{user}--{server}"  # one pod per named server
    assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "bindery"
    # the claims exist before the hub is asked: the portal made them
    assert set(kube.claims) == {(NAMESPACE, c) for c in _expected_claims(lab_session)}
    assert kube.invalid == []


def _expected_claims(session: Session) -> list[str]:
    return [f"bindery-users-{session.user_id}", f"bindery-teams-{session.team_id}"]


def test_cpu_limit_and_guarantee_come_from_the_signed_cpu(
    kube: KubeDouble, hub_kubeconfig: None, lab_session: Session
) -> None:
    spec = dataclasses.replace(services.server_spec(lab_session), cpu=2.0, memory_bytes=GiB)
    pod = pod_for(
        hub_config(), KubernetesSessions().launch_options(spec), spec.hub_user, spec.server_name
    )
    validate(pod)
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources == {
        "limits": {"cpu": 2.0, "memory": GiB},
        "requests": {"cpu": 0.5, "memory": GiB},  # cpu_guarantee_ratio 0.25
    }


def test_binder_values_reach_the_pod_unexpanded(kube: KubeDouble, hub_kubeconfig: None) -> None:
    # Kubernetes expands $(NAME) in env values; a repository URL must not pull in a token
    tricky = "https://git.example.org/$(JUPYTERHUB_API_TOKEN)/{username}.git"
    options = _signed(binder_repo_url=tricky)
    pod = pod_for(hub_config(), options, "u7", "s12")
    validate(pod)
    env = _env(pod["spec"]["containers"][0])
    assert env["BINDER_REPO_URL"] == tricky.replace("$", "$$")  # what the kubelet reads as `tricky`


def _signed(
    *, now: float | None = None, key: bytes | None = None, **changes: Any
) -> dict[str, str]:
    fields: dict[str, Any] = {
        "hub_user": "u7",
        "server_name": "s12",
        "image": IMAGE,
        "volumes": (("bindery-users-7", "persistent"), ("bindery-teams-3", "persistent/teams/lab")),
        **changes,
    }
    options = KubeLaunchOptions(**fields)
    return sign_user_options(
        options.to_dict(), key or signing_key(django_settings.BINDERY_HUB_TOKEN), now=now
    )


def _tampered() -> dict[str, str]:
    signed = _signed()
    return {**signed, "payload": signed["payload"].replace(IMAGE, "docker.io/evil/miner:1")}


REFUSED = {
    "unsigned": lambda: KubeLaunchOptions("u7", "s12", IMAGE).to_dict(),
    "empty": lambda: {},
    "tampered": _tampered,
    "signed with another key": lambda: _signed(key=signing_key("some other token")),
    "expired": lambda: _signed(now=time.time() - 3600),
    "signed for another server": lambda: _signed(server_name="s13"),
    "signed for another user": lambda: _signed(hub_user="u8"),
    "an image outside the prefix": lambda: _signed(image="docker.io/library/python:3.12"),
    "an image beside the prefix": lambda: _signed(image="registry.example.org/binderyx/a:1"),
    "an image climbing out": lambda: _signed(image=f"{PREFIX}../other/a:1"),
    "a claim outside the pattern": lambda: _signed(volumes=(("home-of-someone", "persistent"),)),
    "another kind of claim": lambda: _signed(volumes=(("bindery-builds-1", "persistent"),)),
    "a mount outside persistent/": lambda: _signed(volumes=(("bindery-users-7", ".ssh"),)),
    "a mount climbing out": lambda: _signed(volumes=(("bindery-users-7", "persistent/../.."),)),
    "an absolute mount": lambda: _signed(volumes=(("bindery-users-7", "/etc"),)),
    "a templated mount": lambda: _signed(volumes=(("bindery-users-7", "persistent/{username}"),)),
    "two volumes on one path": lambda: _signed(
        volumes=(("bindery-users-7", "persistent"), ("bindery-teams-3", "persistent"))
    ),
    "a relative default_url": lambda: _signed(default_url="lab"),
    "too little memory": lambda: _signed(memory_bytes=1024),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_hub_refuses_options_with_400(case: str, kube: KubeDouble, hub_kubeconfig: None) -> None:
    config = hub_config()  # the signing key and image prefix the hub really gets
    error = refusal(config, REFUSED[case](), "u7", "s12")
    assert error.status_code == 400
    assert "Invalid launch options" in str(error.log_message)


def test_hub_refuses_every_image_when_no_prefix_is_configured(
    kube: KubeDouble, hub_kubeconfig: None, settings: Any
) -> None:
    settings.BINDERY_REGISTRY_PREFIX = ""
    assert refusal(hub_config(), _signed(), "u7", "s12").status_code == 400


def test_options_round_trip_and_reject_strangers() -> None:
    options = KubeLaunchOptions(
        "u7", "s12", IMAGE, volumes=(("bindery-users-7", "persistent"),), cpu=1.5
    )
    assert KubeLaunchOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    for bad in (
        {**options.to_dict(), "uid": 0},  # no local field sneaks in
        {**options.to_dict(), "image": ""},
        {**options.to_dict(), "memory_bytes": "2G"},
        {**options.to_dict(), "cpu": True},
        {**options.to_dict(), "volumes": [["bindery-users-7"]]},
    ):
        with pytest.raises(InvalidLaunchOptions):
            KubeLaunchOptions.from_dict(bad)


# --- claims (PersistentVolumeClaims) through the real client ------------------------------


def _user(id_: int) -> VolumeRef:
    return VolumeRef(key=f"users/{id_}", user_id=id_)


def _team(id_: int) -> VolumeRef:
    return VolumeRef(key=f"teams/{id_}", team_id=id_)


def test_ensure_twice_creates_one_claim(kube: KubeDouble) -> None:
    backend = KubernetesSessions()
    assert backend.ensure_volume(_user(7)) == "bindery-users-7"
    assert backend.ensure_volume(_user(7)) == "bindery-users-7"  # 409 AlreadyExists: it is
    assert list(kube.claims) == [(NAMESPACE, "bindery-users-7")]
    assert [m for m, _ in kube.requests] == ["POST", "POST"]
    claim = kube.claims[(NAMESPACE, "bindery-users-7")]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["storageClassName"] == "standard-rwo"
    assert claim["spec"]["resources"] == {"requests": {"storage": "5Gi"}}
    assert claim["metadata"]["labels"]["bindery.io/user-id"] == "7"
    assert kube.posted[0] == KubernetesSessions().claim_manifest(_user(7))  # as written
    assert kube.invalid == [] and len(kube.posted) == 2


def test_team_claim_is_read_write_many_with_the_team_class(kube: KubeDouble) -> None:
    assert KubernetesSessions().ensure_volume(_team(3)) == "bindery-teams-3"
    claim = kube.claims[(NAMESPACE, "bindery-teams-3")]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "shared-rwx"
    assert claim["metadata"]["labels"]["bindery.io/team-id"] == "3"
    assert kube.invalid == []


def test_empty_storage_class_means_the_cluster_default(kube: KubeDouble, settings: Any) -> None:
    settings.BINDERY_K8S_STORAGE_CLASS = ""
    KubernetesSessions().ensure_volume(_user(8))
    assert "storageClassName" not in kube.claims[(NAMESPACE, "bindery-users-8")]["spec"]
    assert kube.invalid == []


def test_every_claim_manifest_is_valid(kube: KubeDouble, settings: Any) -> None:
    backend = KubernetesSessions()
    for ref in (_user(1), _team(1), _user(123456789)):
        validate(backend.claim_manifest(ref))
    settings.BINDERY_K8S_TEAM_STORAGE_CLASS = ""
    validate(backend.claim_manifest(_team(2)))


def test_a_new_claim_requests_the_volumes_storage_quota(kube: KubeDouble) -> None:
    """Storage quotas reach the cluster as the claim's size (the storage class enforces it);
    without one the claim gets BINDERY_K8S_VOLUME_SIZE."""
    limited = VolumeRef(key="users/9", user_id=9, limit_bytes=3 * GiB)
    KubernetesSessions().ensure_volume(limited)
    claim = kube.claims[(NAMESPACE, "bindery-users-9")]
    assert claim["spec"]["resources"] == {"requests": {"storage": str(3 * GiB)}}
    validate(KubernetesSessions().claim_manifest(limited))
    assert KubernetesSessions().measure_volume(limited) == 3 * GiB
    assert kube.invalid == []


def test_measure_is_the_claims_size_allowed(kube: KubeDouble) -> None:
    backend = KubernetesSessions()
    assert backend.measure_volume(_user(7)) == 0  # no claim yet (404)
    backend.ensure_volume(_user(7))
    assert backend.measure_volume(_user(7)) == 5 * GiB  # Pending: what it requests
    kube.bind("bindery-users-7", "8Gi")
    assert backend.measure_volume(_user(7)) == 8 * GiB  # Bound: what it got


def test_delete_removes_the_claim_and_a_missing_one_is_fine(kube: KubeDouble) -> None:
    backend = KubernetesSessions()
    backend.ensure_volume(_team(3))
    backend.delete_volume(_team(3))
    assert kube.claims == {}
    backend.delete_volume(_team(3))  # 404: already gone
    assert (
        kube.requests[-2:]
        == [("DELETE", f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/bindery-teams-3")]
        * 2
    )


def test_refused_api_calls_are_a_clear_503(kube: KubeDouble) -> None:
    kube.refuse = 403
    with pytest.raises(ClusterUnavailable) as caught:
        KubernetesSessions().ensure_volume(_user(7))
    assert (caught.value.status, caught.value.code) == (503, "K8S_FORBIDDEN")
    assert "not-a-real-token" not in caught.value.message


def test_an_unreachable_api_is_a_503(kube: KubeDouble, settings: Any, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once closed
    settings.BINDERY_K8S_KUBECONFIG = str(kube.kubeconfig(tmp_path / "closed", closed))
    with pytest.raises(ClusterUnavailable) as caught:
        KubernetesSessions().measure_volume(_user(7))
    assert caught.value.code == "K8S_UNAVAILABLE"


def test_a_silent_api_server_times_out(kube: KubeDouble, settings: Any) -> None:
    settings.BINDERY_K8S_API_TIMEOUT = 0.3
    kube.silent = True
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable):
        KubernetesSessions().ensure_volume(_user(7))
    assert time.monotonic() - started < 5  # _request_timeout, not the OS's minutes


def test_release_and_memory_do_nothing_the_hub_does_not(kube: KubeDouble) -> None:
    backend = KubernetesSessions()
    backend.release(1, "s1")
    assert backend.memory_used("u1", "s1") is None
    assert kube.requests == []


def test_a_misconfigured_builder_does_not_stop_the_launch_at_mark_used(
    kube: KubeDouble, lab_session: Session, settings: Any
) -> None:
    """Real: start_on_hub with a builder get_builder() cannot make (unusable build settings,
    K8S_MISCONFIGURED). Marking the image used is bookkeeping: the launch goes on to the hub,
    here a closed port on 127.0.0.1, and the session fails with the hub's code instead of the
    task raising the builder's error and leaving the session launching."""
    settings.BINDERY_K8S_BUILD_TOLERATIONS = "not a list"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        settings.BINDERY_HUB_API_URL = f"http://127.0.0.1:{sock.getsockname()[1]}/hub/api"

    assert services.start_on_hub(lab_session.pk) == Session.Status.FAILED

    lab_session.refresh_from_db()
    assert (lab_session.status, lab_session.error_code) == ("failed", "HUB_UNAVAILABLE")
    assert kube.requests == []  # the hub was asked first; no claim was made for nothing


# --- the volumes API under the kubernetes backend -----------------------------------------


@pytest.mark.django_db
def test_volume_api_sizes_from_the_claim_and_archive_is_not_offered(
    kube: KubeDouble, token_client: Any
) -> None:
    user = cast(User, UserFactory())
    volume = services.home_volume(user)
    client = token_client(user)
    detail = client.get(f"/api/v1/volumes/{volume.pk}/").json()
    assert (detail["size_bytes"], detail["size_kind"], detail["archive_offered"]) == (
        0,
        "capacity",
        False,
    )
    KubernetesSessions().ensure_volume(services.volume_ref(volume))
    kube.bind(f"bindery-users-{user.pk}", "10Gi")
    assert client.get(f"/api/v1/volumes/{volume.pk}/").json()["size_bytes"] == 10 * GiB
    response = client.get(f"/api/v1/volumes/{volume.pk}/archive/")
    assert response.status_code == 501
    body = response.json()
    assert body["error"] == "ARCHIVE_NOT_OFFERED"
    assert "not offered" in body["detail"]
    deleted = client.delete(f"/api/v1/volumes/{volume.pk}/", {"confirm": "Home"}, format="json")
    assert deleted.status_code == 204
    assert kube.claims == {}


@pytest.mark.django_db
def test_volumes_page_reads_claims_and_creates_none(kube: KubeDouble, client: Any) -> None:
    user = cast(User, UserFactory())
    client.force_login(user)
    assert client.get(reverse("volumes")).status_code == 200
    assert kube.claims == {}  # a GET reads: claims are made when a session mounts them
    assert [m for m, _ in kube.requests] == ["GET"]


@pytest.mark.django_db
def test_volumes_page_says_capacity_and_offers_no_download(kube: KubeDouble, client: Any) -> None:
    """The claim's capacity is labelled as such, and the page offers no .tar.gz that would
    answer 501: it says in one sentence why, once."""
    user = cast(User, UserFactory())
    volume = services.home_volume(user)
    KubernetesSessions().ensure_volume(services.volume_ref(volume))
    kube.bind(f"bindery-users-{user.pk}", "10Gi")
    client.force_login(user)
    html = client.get(reverse("volumes")).content.decode()
    assert "<th>Capacity</th>" in html and "<th>Size</th>" not in html
    assert "10.0\xa0GB" in html  # filesizeformat of the bound claim's 10 GiB
    assert reverse("api-volume-archive", args=[volume.pk]) not in html
    assert "Download .tar.gz" not in html
    assert html.count("Volumes cannot be downloaded here") == 1


# --- manage.py check and runhub -----------------------------------------------------------


def test_check_passes_with_the_kubernetes_settings(kube: KubeDouble) -> None:
    call_command("check")  # raises SystemCheckError on any error


def test_check_errors_without_a_registry_prefix(kube: KubeDouble, settings: Any) -> None:
    settings.BINDERY_REGISTRY_PREFIX = ""
    with pytest.raises(SystemCheckError, match=r"bindery\.E020.*BINDERY_REGISTRY_PREFIX"):
        call_command("check")


def test_check_names_unusable_settings(kube: KubeDouble, settings: Any) -> None:
    settings.BINDERY_K8S_SESSION_NODE_SELECTOR = ["not", "a", "map"]
    settings.BINDERY_K8S_VOLUME_SIZE = "lots"
    with pytest.raises(SystemCheckError) as caught:
        call_command("check")
    assert "BINDERY_K8S_SESSION_NODE_SELECTOR" in str(caught.value)
    assert "BINDERY_K8S_VOLUME_SIZE" in str(caught.value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.hub
@pytest.mark.timeout(120)
def test_runhub_runs_the_hub_without_the_local_steps(kube: KubeDouble, tmp_path: Path) -> None:
    hub_dir, public, api = tmp_path / "hub", _free_port(), _free_port()
    kubeconfig = kube.kubeconfig(tmp_path / "hub-kubeconfig")
    environ = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("BINDERY_HUB", "BINDERY_K8S", "BINDERY_REGISTRY", "KUBE"))
        },
        "BINDERY_VAR_DIR": str(tmp_path / "var"),
        "BINDERY_BACKEND": "kubernetes",
        "BINDERY_REGISTRY_PREFIX": PREFIX,
        "BINDERY_K8S_KUBECONFIG": str(kubeconfig),
        "BINDERY_HUB_DIR": str(hub_dir),
        "BINDERY_HUB_BIND": f"127.0.0.1:{public}",
        "BINDERY_HUB_PROXY_API_BIND": f"127.0.0.1:{_free_port()}",
        "BINDERY_HUB_API_BIND": f"127.0.0.1:{api}",
        "BINDERY_HUB_TOKEN": "portal-token-for-the-runhub-test",
    }
    process = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "runhub"],
        cwd=BASE_DIR,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    running = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "JupyterHub is now running" in line:
                running.set()
        running.set()  # the hub exited: the assertions below say so

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert running.wait(timeout=90) and process.poll() is None, "".join(lines)
        assert requests.get(f"http://127.0.0.1:{api}/hub/api/", timeout=5).ok
        config = (hub_dir / "jupyterhub_config.py").read_text()
        assert f"c.JupyterHub.spawner_class = {SPAWNER!r}" in config
        assert "c.JupyterHub.cleanup_servers = False" in config
        assert "BinderySpawner" not in config
        assert not (hub_dir / "runhub-watchdog.pid").exists()  # no local watchdog
        hub_env = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
        assert f"KUBECONFIG={kubeconfig}".encode() in hub_env  # for KubeSpawner
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        reader.join(timeout=10)
    assert any("Leaving single-user servers running" in line for line in lines)  # pods stay
    assert kube.requests == []  # a hub with no servers asks the cluster nothing
