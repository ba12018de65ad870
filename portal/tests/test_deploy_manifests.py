"""The Kubernetes manifests (deploy/) and the image's Dockerfile, checked without a cluster.

`kubectl kustomize` renders the base, the production overlay and the production overlay with
the optional in-cluster PostgreSQL and Redis; every rendered document is validated against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors), and the
properties that keep Bindery safe are asserted on what was rendered, not on the source files.
Nothing here talks to a cluster or a docker daemon: what a real cluster must still show is in
deploy/README.md ("What to check").

kubectl missing: the tests skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from django.urls import resolve

from apps import netns
from apps.testing import require

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBECTL = shutil.which("kubectl")
# The newest Kubernetes whose schemas kubernetes-validate carries (1.37 with 1.37.x).
K8S_VERSION = kubernetes_validate.latest_version()

Doc = dict[str, Any]

# Every setting that holds a secret: never a ConfigMap key, never an env value; a file from a
# Secret named by <NAME>_FILE (settings.py's FileAwareEnv). BINDERY_REGISTRY_PASSWORD is the
# Kubernetes backend's registry credential.
SECRET_SETTINGS = {
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "BINDERY_ENCRYPTION_KEY",
    "BINDERY_HUB_TOKEN",
    "EMAIL_URL",
    "BINDERY_REGISTRY_PASSWORD",
    "GITHUB_CLIENT_SECRET",
    "GITLAB_CLIENT_SECRET",
    "ORCID_CLIENT_SECRET",
}
# The Kubernetes backend's settings as issue 10 names them (settings.py is gaining them now).
K8S_BACKEND_SETTINGS = {
    "BINDERY_K8S_NAMESPACE",
    "BINDERY_K8S_KUBECONFIG",
    "BINDERY_K8S_API_TIMEOUT",
    "BINDERY_K8S_BUILD_IMAGE",
    "BINDERY_K8S_BUILD_NODE_SELECTOR",
    "BINDERY_K8S_BUILD_TOLERATIONS",
    "BINDERY_K8S_BUILD_CPU_REQUEST",
    "BINDERY_K8S_BUILD_CPU_LIMIT",
    "BINDERY_K8S_BUILD_MEMORY_REQUEST",
    "BINDERY_K8S_BUILD_MEMORY_LIMIT",
    "BINDERY_K8S_BUILD_TIMEOUT",
    "BINDERY_K8S_BUILD_PENDING_TIMEOUT",
    "BINDERY_K8S_DOCKER_SOCKET",
    "BINDERY_K8S_BUILD_POD_TTL",
    "BINDERY_REGISTRY_URL",
    "BINDERY_REGISTRY_PREFIX",
    "BINDERY_REGISTRY_USERNAME",
    "BINDERY_REGISTRY_PASSWORD",
    "BINDERY_REGISTRY_PUSH_SECRET",
    "BINDERY_K8S_SESSION_NODE_SELECTOR",
    "BINDERY_K8S_SESSION_TOLERATIONS",
    "BINDERY_K8S_STORAGE_CLASS",
    "BINDERY_K8S_TEAM_STORAGE_CLASS",
    "BINDERY_K8S_VOLUME_SIZE",
    "BINDERY_K8S_IMAGE_PULL_SECRET",
}
# Labels of the pods that run code from repositories: KubeSpawner's user pods (its default
# component_label) and the Kubernetes builder's build pods.
USER_POD = {"component": "singleuser-server", "app.kubernetes.io/component": "singleuser-server"}
BUILD_POD = {"component": "bindery-build"}
PORTAL = {name: {"app.kubernetes.io/name": "bindery", "app.kubernetes.io/component": name}
          for name in ("web", "worker", "beat", "hub", "postgres", "redis", "dind")}  # fmt: skip
# The one container allowed to be privileged: the docker daemon builds use.
PRIVILEGED = {("DaemonSet", "bindery-dind", "dind")}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")


# -- rendering ------------------------------------------------------------------------------


def kustomize(path: Path) -> list[Doc]:
    require(KUBECTL, "kubectl (with its kustomize) is not installed")
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {path} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def deploy_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/ copied (tests change the copy, never the tree), with overlays/with-data: the
    production overlay with its commented-out in-cluster data component switched on."""
    copy = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, copy)
    shutil.copytree(copy / "overlays" / "production", copy / "overlays" / "with-data")
    kustomization = copy / "overlays" / "with-data" / "kustomization.yaml"
    line = "  # - ../../components/in-cluster-data\n"
    assert line in kustomization.read_text()
    kustomization.write_text(kustomization.read_text().replace(line, line.replace("# ", "")))
    return copy


@pytest.fixture(scope="module")
def base() -> list[Doc]:
    return kustomize(DEPLOY / "base")


@pytest.fixture(scope="module")
def production() -> list[Doc]:
    return kustomize(DEPLOY / "overlays" / "production")


@pytest.fixture(scope="module")
def with_data(deploy_copy: Path) -> list[Doc]:
    return kustomize(deploy_copy / "overlays" / "with-data")


@pytest.fixture(scope="module", params=["base", "production", "with_data"])
def rendered(request: pytest.FixtureRequest) -> list[Doc]:
    docs: list[Doc] = request.getfixturevalue(request.param)
    return docs


# -- helpers --------------------------------------------------------------------------------


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def containers(spec: Doc) -> Iterator[Doc]:
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def container(workload: Doc, name: str) -> Doc:
    found = [c for c in containers(pod_spec(workload)) if c["name"] == name]
    assert len(found) == 1, f"{workload['metadata']['name']} has no container {name}"
    return found[0]


def settings_data(docs: list[Doc]) -> dict[str, str]:
    maps = [
        d
        for d in of_kind(docs, "ConfigMap")
        if d["metadata"]["name"].startswith("bindery-settings")
    ]
    assert len(maps) == 1
    data: dict[str, str] = maps[0]["data"]
    return data


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) matches these labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def policies_for(docs: list[Doc], labels: dict[str, str]) -> list[Doc]:
    return [p for p in of_kind(docs, "NetworkPolicy") if selects(p["spec"]["podSelector"], labels)]


def peer_pods(peer: Doc, namespace_labels: dict[str, str]) -> list[str]:
    """Which of Bindery's kinds of pod (in its own namespace) a policy peer selects."""
    if "ipBlock" in peer:
        return []
    if "namespaceSelector" in peer and not selects(peer["namespaceSelector"], namespace_labels):
        return []
    selector = peer.get("podSelector", {})
    kinds = {**PORTAL, "user": USER_POD, "build": BUILD_POD}
    return [name for name, labels in kinds.items() if selects(selector, labels)]


def env_of(c: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in c.get("env", [])}


# -- every document is valid Kubernetes -------------------------------------------------------


def test_every_rendered_document_validates_against_the_kubernetes_schemas(
    rendered: list[Doc],
) -> None:
    assert rendered
    errors = []
    for doc in rendered:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            errors.append(f"{doc['kind']} {doc['metadata'].get('name')}: {e}")
    assert not errors, "\n".join(errors)


def test_everything_lands_in_one_namespace(rendered: list[Doc]) -> None:
    namespaced = [d for d in rendered if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"bindery"}
    assert [d["metadata"]["name"] for d in of_kind(rendered, "Namespace")] == ["bindery"]


# -- containers ------------------------------------------------------------------------------


def test_every_container_has_resources_and_a_restricted_security_context(
    rendered: list[Doc],
) -> None:
    checked = 0
    for workload in (d for d in rendered if d["kind"] in WORKLOADS):
        spec = pod_spec(workload)
        pod_sc = spec.get("securityContext", {})
        for c in containers(spec):
            where = f"{workload['kind']} {workload['metadata']['name']} container {c['name']}"
            checked += 1
            resources = c.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{where}: {part}"
            sc = c.get("securityContext")
            assert sc, f"{where}: no securityContext"
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", where
            if (workload["kind"], workload["metadata"]["name"], c["name"]) in PRIVILEGED:
                assert sc.get("privileged") is True
                continue
            assert sc.get("privileged") is not True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert (sc.get("runAsUser") or pod_sc.get("runAsUser", 0)) != 0, where
    assert checked >= 7  # web, worker, beat (with init containers), hub at least


def test_no_host_namespaces_or_host_paths_outside_the_docker_daemon(rendered: list[Doc]) -> None:
    for workload in (d for d in rendered if d["kind"] in WORKLOADS):
        spec = pod_spec(workload)
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(field), workload["metadata"]["name"]
        host_paths = [v for v in spec.get("volumes", []) if "hostPath" in v]
        if workload["metadata"]["name"] != "bindery-dind":
            assert not host_paths, workload["metadata"]["name"]


def test_a_token_only_for_the_processes_that_call_the_api(rendered: list[Doc]) -> None:
    """web, worker and hub each run as their own account with a token (their Role is what
    their code calls, below); beat, which only schedules tasks, and the data and docker pods
    have none. No account mounts a token by itself: only those pod specs ask for one."""
    accounts = {d["metadata"]["name"]: d for d in of_kind(rendered, "ServiceAccount")}
    bound = {s["name"] for b in of_kind(rendered, "RoleBinding") for s in b["subjects"]}
    for account in accounts.values():
        assert account["automountServiceAccountToken"] is False, account["metadata"]["name"]
    for process in ("web", "worker", "hub"):
        spec = pod_spec(one(rendered, "Deployment", f"bindery-{process}"))
        assert spec["serviceAccountName"] == f"bindery-{process}"
        assert spec["automountServiceAccountToken"] is True, process
    beat = pod_spec(one(rendered, "Deployment", "bindery-beat"))
    assert beat["automountServiceAccountToken"] is False
    assert beat["serviceAccountName"] in accounts and beat["serviceAccountName"] not in bound
    for workload in (d for d in rendered if d["kind"] in ("StatefulSet", "DaemonSet")):
        assert pod_spec(workload)["automountServiceAccountToken"] is False
    assert bound == {"bindery-web", "bindery-worker", "bindery-hub"}
    # exactly one process per account: a shared account would share its Role
    names = [pod_spec(d)["serviceAccountName"] for d in of_kind(rendered, "Deployment")]
    assert len(names) == len(set(names))


# -- RBAC ------------------------------------------------------------------------------------

EXPECTED_RULES = {
    # the volume pages and API: measure_volume reads a claim, delete_volume deletes it
    "bindery-web": {
        "persistentvolumeclaims": {"get", "delete"},
    },
    # apps/builds/backends/kubernetes/cluster.py's calls (builds, the cleaner), and the
    # claims a launch mounts (launch_options → ensure_volume)
    "bindery-worker": {
        "pods": {"create", "get", "list", "delete"},
        "pods/log": {"get"},
        "secrets": {"create", "patch", "list", "delete"},
        "persistentvolumeclaims": {"create"},
    },
    # what KubeSpawner 7 calls, without internal_ssl, services_enabled, storage_pvc_ensure
    "bindery-hub": {
        "pods": {"create", "get", "list", "watch", "delete"},
        "events": {"get", "list", "watch"},
    },
}


def test_roles_grant_only_what_each_process_uses_in_one_namespace(
    rendered: list[Doc],
) -> None:
    assert not of_kind(rendered, "ClusterRole")
    assert not of_kind(rendered, "ClusterRoleBinding")
    roles = {r["metadata"]["name"]: r for r in of_kind(rendered, "Role")}
    assert set(roles) == set(EXPECTED_RULES)
    for name, role in roles.items():
        granted: dict[str, set[str]] = {}
        for rule in role["rules"]:
            assert rule["apiGroups"] == [""], name  # the core group only
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule
            for resource in rule["resources"]:
                assert "*" not in resource
                granted.setdefault(resource, set()).update(rule["verbs"])
        assert all("*" not in verbs for verbs in granted.values())
        assert granted == EXPECTED_RULES[name], name
    bindings = {b["metadata"]["name"]: b for b in of_kind(rendered, "RoleBinding")}
    assert set(bindings) == set(EXPECTED_RULES)
    for name, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": name,
        }
        namespace = binding["metadata"]["namespace"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": name, "namespace": namespace}
        ]
        assert roles[name]["metadata"]["namespace"] == namespace


_VERBS = {"create": "create", "read": "get", "list": "list", "delete": "delete",
          "patch": "patch", "replace": "update"}  # fmt: skip
_RESOURCES = {
    "pod": "pods",
    "pod_log": "pods/log",
    "secret": "secrets",
    "event": "events",
    "persistent_volume_claim": "persistentvolumeclaims",
    "service": "services",
}
_CALL = re.compile(r"\.(create|read|list|delete|patch|replace)_namespaced_(\w+?)\b")


def api_calls(paths: list[Path]) -> set[tuple[str, str]]:
    """(resource, verb) of every CoreV1Api ``<verb>_namespaced_<kind>`` these files name."""
    calls = set()
    for path in paths:
        text = path.read_text()
        calls |= _calls_in(text)
        if "watch.Watch" in text or "Watch()" in text:
            calls |= {(resource, "watch") for resource, v in calls if v == "list"}
    return calls


def _calls_in(text: str) -> set[tuple[str, str]]:
    return {(_RESOURCES[kind], _VERBS[verb]) for verb, kind in _CALL.findall(text)}


def _granted(role: Doc) -> set[tuple[str, str]]:
    return {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}


# -- who calls the Kubernetes API, from which process ------------------------------------------

# Which process runs each function of the portal's kubernetes backends that names a
# `<verb>_namespaced_<kind>` call. test_the_process_map_is_what_the_code_does walks each
# one's callers in the source up to the process's entry points (ENTRY_POINTS), and
# test_each_process_role_is_exactly_what_its_code_calls derives the Roles from it.
SESSIONS_BACKEND = "apps/sessions/backends/kubernetes/backend.py"
CLUSTER = "apps/builds/backends/kubernetes/cluster.py"
API_CALLERS = {
    # the volumes page and GET /api/v1/volumes/<id>/ (services.measure_volume), and deleting
    # a volume from the page or DELETE /api/v1/volumes/<id>/ (services.delete_volume)
    f"{SESSIONS_BACKEND}:KubernetesSessions.measure_volume": "web",
    f"{SESSIONS_BACKEND}:KubernetesSessions.delete_volume": "web",
    # launch_options, from services.start_on_hub: the launch_session task
    f"{SESSIONS_BACKEND}:KubernetesSessions.ensure_volume": "worker",
    # the builder (the run_build task) and the cleaner (the clean_build_pods task)
    **{
        f"{CLUSTER}:Cluster.{method}": "worker"
        for method in ("create_pod", "read_pod", "delete_pod", "list_pods", "open_log",
                       "create_secret", "own_secret", "delete_secret", "list_secrets")
    },
}  # fmt: skip
# Where each process enters the portal's code: web serves the views, the API and the
# websockets; the worker runs the Celery tasks (beat only schedules them and runs none of
# their code); the hub runs runhub and the spawners (KubeSpawner's own calls: the test after).
ENTRY_POINTS = {
    "web": ("apps/*/views.py", "apps/*/api/views.py", "apps/*/consumers.py",
            "portal/views.py", "portal/consumers.py", "portal/health.py"),
    "worker": ("apps/*/tasks.py",),
    "hub": ("apps/sessions/management/commands/runhub.py", "apps/sessions/backends/*/spawner.py"),
}  # fmt: skip
# How the code names the objects whose methods make the calls, besides `self`: the backend
# the services get, the builder, and a Cluster (`self.cluster`, `cluster`, `x.cluster`).
RECEIVERS = {
    "KubernetesSessions": ("get_session_backend()",),
    "KubernetesBuilder": ("get_builder()",),
    "Cluster": ("cluster",),
}


def _process_of(path: str) -> str | None:
    return next(
        (p for p, globs in ENTRY_POINTS.items() if any(fnmatch.fnmatch(path, g) for g in globs)),
        None,
    )


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return f"{_dotted(node.func)}()"
    return "?"


class _Source:
    """The portal's code (apps/ and portal/, not tests) as functions and what each names:
    ``qual`` is ``path:function`` or ``path:Class.method``; ``refs`` every dotted name a
    function's body uses (calls and references such as ``target=self._run``)."""

    def __init__(self) -> None:
        self.functions: dict[str, ast.AST] = {}
        self.refs: dict[str, set[str]] = {}
        self.imports: dict[str, dict[str, str]] = {}  # path -> local name -> path[:name]
        for file in sorted([*(ROOT / "apps").rglob("*.py"), *(ROOT / "portal").rglob("*.py")]):
            if "tests" in file.parts:
                continue
            path = str(file.relative_to(ROOT))
            tree = ast.parse(file.read_text())
            self.imports[path] = self._imports_of(tree)
            for node in tree.body:
                if isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            self._add(f"{path}:{node.name}.{item.name}", item)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self._add(f"{path}:{node.name}", node)

    def _add(self, qual: str, node: ast.AST) -> None:
        self.functions[qual] = node
        self.refs[qual] = {
            _dotted(n) for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Attribute))
        }

    @staticmethod
    def _module_path(dotted: str) -> str:
        base = dotted.replace(".", "/")
        return f"{base}/__init__.py" if (ROOT / base).is_dir() else f"{base}.py"

    def _imports_of(self, tree: ast.AST) -> dict[str, str]:
        found = {}
        for node in ast.walk(tree):  # function-level imports too
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}".replace(".", "/")
                    if (ROOT / f"{submodule}.py").is_file():
                        target = f"{submodule}.py"  # `from apps.sessions import services`
                    else:
                        target = f"{self._module_path(node.module)}:{alias.name}"
                    found[alias.asname or alias.name] = target
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    found[alias.asname or alias.name] = self._module_path(alias.name)
        return found

    def callers(self, qual: str) -> set[str]:
        """The functions that name ``qual``: as ``self.m`` in its class, through a receiver
        of its class (RECEIVERS), by its bare name in its module or where it is imported
        (``Class(...)`` for ``Class.__init__``), or as ``module.f``."""
        path, name = qual.split(":")
        cls, _, method = name.rpartition(".")
        found = set()
        for other, refs in self.refs.items():
            other_path, other_name = other.split(":")
            imports = self.imports[other_path]
            if cls:
                if (
                    other_path == path
                    and other_name.startswith(f"{cls}.")
                    and (f"self.{method}" in refs)
                ):
                    found.add(other)
                receivers = RECEIVERS.get(cls, ())
                for ref in refs:
                    head, _, last = ref.rpartition(".")
                    if last == method and any(
                        head == r or head.endswith(f".{r}") for r in receivers
                    ):
                        found.add(other)
                if method == "__init__":
                    local = [n for n, t in imports.items() if t == f"{path}:{cls}"]
                    if (other_path == path and cls in refs) or any(n in refs for n in local):
                        found.add(other)
            else:
                modules = [n for n, t in imports.items() if t == path]
                local = [n for n, t in imports.items() if t == f"{path}:{name}"]
                if (
                    (other_path == path and name in refs)
                    or any(f"{m}.{name}" in refs for m in modules)
                    or any(n in refs for n in local)
                ):
                    found.add(other)
        found.discard(qual)
        return found

    def processes_reaching(self, qual: str) -> tuple[set[str], list[str]]:
        """The processes whose entry points reach ``qual``, and the functions on the way
        that nothing calls (dead code, or a call this walk cannot see)."""
        processes, dead, seen, todo = set(), [], {qual}, [qual]
        while todo:
            current = todo.pop()
            process = _process_of(current.split(":")[0])
            if process is not None:
                processes.add(process)
                continue
            callers = self.callers(current) - seen
            if not callers and not (self.callers(current) & seen):
                dead.append(current)
            seen |= callers
            todo.extend(callers)
        return processes, dead


@pytest.fixture(scope="module")
def source() -> _Source:
    return _Source()


def test_the_process_map_is_what_the_code_does(source: _Source) -> None:
    """Every function of the portal's kubernetes backends that calls the API is in
    API_CALLERS, and the views or tasks that reach it (walking its callers in the source)
    are those of the process it names, and only those."""
    making_calls = {
        qual
        for qual, node in source.functions.items()
        if "kubernetes" in qual.split(":")[0] and _calls_in(ast.unparse(node))
    }
    assert making_calls == set(API_CALLERS)
    for qual, process in API_CALLERS.items():
        reached, dead = source.processes_reaching(qual)
        assert dead == [], f"{qual}: nothing calls {dead}"
        assert reached == {process}, qual
    # the walk itself: the chains the comments above describe
    web_volume = source.callers(f"{SESSIONS_BACKEND}:KubernetesSessions.measure_volume")
    assert web_volume == {"apps/sessions/services.py:measure_volume"}
    assert source.callers("apps/sessions/services.py:measure_volume") == {
        "apps/sessions/views.py:volumes",
        "apps/sessions/api/views.py:VolumeDetailView.get",
    }
    assert source.callers(f"{SESSIONS_BACKEND}:KubernetesSessions.ensure_volume") == {
        f"{SESSIONS_BACKEND}:KubernetesSessions.launch_options"
    }
    assert "apps/builds/tasks.py:clean_build_pods" in source.callers(
        "apps/builds/backends/kubernetes/cleaner.py:clean_build_pods"
    )


def test_each_process_role_is_exactly_what_its_code_calls(base: list[Doc], source: _Source) -> None:
    """The Role of web and of the worker grants the calls of the functions API_CALLERS
    gives that process, nothing more and nothing less; beat calls nothing."""
    wanted: dict[str, set[tuple[str, str]]] = {}
    for qual, process in API_CALLERS.items():
        calls = _calls_in(ast.unparse(source.functions[qual]))
        wanted.setdefault(process, set()).update(calls)
    assert set(wanted) == {"web", "worker"}
    assert ("pods", "create") in wanted["worker"] and ("pods/log", "get") in wanted["worker"]
    for process, calls in wanted.items():
        assert _granted(one(base, "Role", f"bindery-{process}")) == calls, process
        expected = EXPECTED_RULES[f"bindery-{process}"]
        assert {(r, v) for r, verbs in expected.items() for v in verbs} == calls


def test_the_hub_role_covers_what_kubespawner_calls(base: list[Doc]) -> None:
    """KubeSpawner names most calls through getattr (f"create_namespaced_{kind}"): its direct
    calls, and its reflectors (list and watch) of pods and events, are checked here; the kinds
    its optional features need (secrets, services, PVCs) are deliberately not granted."""
    spec = importlib.util.find_spec("kubespawner")  # its source, not imported (slow)
    assert spec and spec.origin
    source = Path(spec.origin).parent / "spawner.py"
    used = {(r, v) for r, v in api_calls([source]) if r == "pods"}
    assert used == {("pods", "create"), ("pods", "delete")}
    # the reflectors: list_namespaced_<kind> with watch=True, for these two kinds
    assert 'kind="pods"' in source.read_text() and 'kind="events"' in source.read_text()
    reflectors = {(kind, verb) for kind in ("pods", "events") for verb in ("list", "watch")}
    granted = _granted(one(base, "Role", "bindery-hub"))
    assert used | reflectors <= granted
    assert {r for r, _ in granted} == {"pods", "events"}


def test_each_process_works_in_its_own_namespace(rendered: list[Doc]) -> None:
    """The Roles are namespaced: the namespace the code creates pods and claims in comes from
    the pod's own (downward API), so the two cannot disagree."""
    for name, main in (
        ("bindery-web", "web"),
        ("bindery-worker", "worker"),
        ("bindery-hub", "hub"),
    ):
        env = env_of(container(one(rendered, "Deployment", name), main))
        assert env["BINDERY_K8S_NAMESPACE"]["valueFrom"] == {
            "fieldRef": {"fieldPath": "metadata.namespace"}
        }
    assert "BINDERY_K8S_NAMESPACE" not in settings_data(rendered)


# -- NetworkPolicies -------------------------------------------------------------------------


def _internet_blocks(rule: Doc) -> list[Doc]:
    return [p["ipBlock"] for p in rule.get("to", []) if "ipBlock" in p]


def _assert_internet_excludes_private_ranges(rule: Doc) -> None:
    for block in _internet_blocks(rule):
        cidr = ipaddress.ip_network(block["cidr"])
        excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
        if cidr.version == 4:
            assert cidr.prefixlen == 0
            blocked = [ipaddress.ip_network(n) for n in netns.DEFAULT_BLOCKED]
            for net in [*blocked, ipaddress.ip_network("127.0.0.0/8")]:
                assert any(net.subnet_of(e) for e in excepted), f"{net} is reachable"  # type: ignore[arg-type]
        else:
            for text in ("fc00::/7", "fe80::/10"):
                assert ipaddress.ip_network(text) in excepted


def _is_dns(rule: Doc) -> bool:
    ports = rule.get("ports", [])
    if not ports or {p["port"] for p in ports} != {53}:
        return False
    peers = rule.get("to", [])
    return bool(peers) and all(
        p.get("namespaceSelector", {}).get("matchLabels")
        == {"kubernetes.io/metadata.name": "kube-system"}
        and p.get("podSelector", {}).get("matchLabels") == {"k8s-app": "kube-dns"}
        for p in peers
    )


def test_user_pods_reach_the_hub_api_dns_and_the_internet_only(rendered: list[Doc]) -> None:
    namespace = {"kubernetes.io/metadata.name": "bindery"}
    policies = policies_for(rendered, USER_POD)
    assert policies, "no NetworkPolicy selects KubeSpawner's user pods"
    for policy in policies:
        spec = policy["spec"]
        assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
        for rule in spec.get("ingress", []):
            assert [k for p in rule["from"] for k in peer_pods(p, namespace)] == ["hub"]
            assert rule["ports"] == [{"protocol": "TCP", "port": 8888}]  # the server's port
        for rule in spec["egress"]:
            assert rule.get("to"), "an egress rule without `to` allows everything"
            if _is_dns(rule):
                continue
            pods = [k for p in rule["to"] for k in peer_pods(p, namespace)]
            if pods:
                assert pods == ["hub"]
                assert rule["ports"] == [{"protocol": "TCP", "port": 8081}]
            else:
                _assert_internet_excludes_private_ranges(rule)


def test_build_pods_reach_dns_and_the_internet_only(rendered: list[Doc]) -> None:
    policies = policies_for(rendered, BUILD_POD)
    assert policies, "no NetworkPolicy selects build pods"
    for policy in policies:
        spec = policy["spec"]
        assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
        assert not spec.get("ingress")
        for rule in spec["egress"]:
            assert rule.get("to")
            if not _is_dns(rule):
                assert all("ipBlock" in p for p in rule["to"])
                _assert_internet_excludes_private_ranges(rule)


def test_the_docker_daemon_reaches_dns_and_the_internet_only(production: list[Doc]) -> None:
    """Build steps (RUN, postBuild) run in the daemon's network namespace, not the build pod's."""
    policies = policies_for(production, PORTAL["dind"])
    assert len(policies) == 1
    spec = policies[0]["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"} and not spec.get("ingress")
    for rule in spec["egress"]:
        if not _is_dns(rule):
            _assert_internet_excludes_private_ranges(rule)
    assert settings_data(production)["BINDERY_K8S_DOCKER_SOCKET"] == "/var/run/dind/docker.sock"
    dind = pod_spec(one(production, "DaemonSet", "bindery-dind"))
    assert {
        "name": "socket",
        "hostPath": {"path": "/var/run/dind", "type": "DirectoryOrCreate"},
    } in (dind["volumes"])


def _allowed_from(policies: list[Doc], namespace: dict[str, str]) -> dict[int, set[str]]:
    """port -> which kinds of pod (or 'ingress-controller') may connect."""
    allowed: dict[int, set[str]] = {}
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", []):
            for port in rule["ports"]:
                for peer in rule["from"]:
                    ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
                    if ns and ns != namespace:
                        allowed.setdefault(port["port"], set()).add(f"namespace {ns}")
                    else:
                        allowed.setdefault(port["port"], set()).update(peer_pods(peer, namespace))
    return allowed


def test_the_hub_accepts_the_ingress_on_its_proxy_and_users_and_portal_on_its_api(
    rendered: list[Doc],
) -> None:
    namespace = {"kubernetes.io/metadata.name": "bindery"}
    allowed = _allowed_from(policies_for(rendered, PORTAL["hub"]), namespace)
    controller = "namespace {'kubernetes.io/metadata.name': 'ingress-nginx'}"
    assert allowed == {8000: {controller}, 8081: {"user", "web", "worker", "beat"}}
    assert _allowed_from(policies_for(rendered, PORTAL["web"]), namespace) == {8000: {controller}}
    for name in ("worker", "beat"):
        policies = policies_for(rendered, PORTAL[name])
        assert policies and _allowed_from(policies, namespace) == {}


def test_database_and_redis_accept_only_web_worker_and_beat(with_data: list[Doc]) -> None:
    namespace = {"kubernetes.io/metadata.name": "bindery"}
    for name, port in (("postgres", 5432), ("redis", 6379)):
        allowed = _allowed_from(policies_for(with_data, PORTAL[name]), namespace)
        assert allowed == {port: {"web", "worker", "beat"}}, name
        service = one(with_data, "Service", f"bindery-{name}")
        assert [p["port"] for p in service["spec"]["ports"]] == [port]


# -- Ingress and host names --------------------------------------------------------------------


def _hosts(docs: list[Doc]) -> dict[str, str]:
    data = settings_data(docs)
    portal, hub = one(docs, "Ingress", "bindery-portal"), one(docs, "Ingress", "bindery-hub")
    web = one(docs, "Deployment", "bindery-web")
    probe_hosts = {
        h["value"]
        for probe in ("readinessProbe", "startupProbe", "livenessProbe")
        for h in container(web, "web")[probe]["httpGet"]["httpHeaders"]
        if h["name"] == "Host"
    }
    assert len(probe_hosts) == 1
    for ingress in (portal, hub):
        assert len(ingress["spec"]["rules"]) == 1
        assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]
    assert portal["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {
        "name": "bindery-web",
        "port": {"name": "http"},
    }
    assert hub["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {
        "name": "bindery-hub",
        "port": {"name": "proxy"},
    }
    return {
        "portal ingress": portal["spec"]["rules"][0]["host"],
        "hub ingress": hub["spec"]["rules"][0]["host"],
        "ALLOWED_HOSTS": data["ALLOWED_HOSTS"],
        "BINDERY_SITE_URL": urlsplit(data["BINDERY_SITE_URL"]).hostname or "",
        "CSRF_TRUSTED_ORIGINS": urlsplit(data["CSRF_TRUSTED_ORIGINS"]).hostname or "",
        "BINDERY_HUB_URL": urlsplit(data["BINDERY_HUB_URL"]).hostname or "",
        "web probes": probe_hosts.pop(),
        "ingress controller": one(docs, "NetworkPolicy", "bindery-web")["spec"]["ingress"][0][
            "from"
        ][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
    }


def test_portal_and_hub_have_distinct_hosts_that_agree_everywhere(rendered: list[Doc]) -> None:
    hosts = _hosts(rendered)
    portal = hosts["portal ingress"]
    for name in ("ALLOWED_HOSTS", "BINDERY_SITE_URL", "CSRF_TRUSTED_ORIGINS", "web probes"):
        assert hosts[name] == portal, name
    assert hosts["BINDERY_HUB_URL"] == hosts["hub ingress"]
    assert hosts["hub ingress"] != portal  # settings.py refuses it in production
    data = settings_data(rendered)
    assert data["BINDERY_SITE_URL"].startswith("https://")
    assert data["BINDERY_HUB_URL"].startswith("https://")


def test_the_overlay_sets_hosts_and_namespace_each_in_one_place(deploy_copy: Path) -> None:
    overlay = deploy_copy / "overlays" / "production"
    hosts_file, kustomization = overlay / "hosts.yaml", overlay / "kustomization.yaml"
    original_hosts, original_kustomization = hosts_file.read_text(), kustomization.read_text()
    try:
        hosts_file.write_text(
            original_hosts.replace("portal: bindery.example.org", "portal: portal.test.net")
            .replace("hub: hub.example-usercontent.org", "hub: users.test.io")
            .replace("ingressNamespace: ingress-nginx", "ingressNamespace: traefik")
        )
        assert "\nnamespace: bindery\n" in original_kustomization
        kustomization.write_text(
            original_kustomization.replace("\nnamespace: bindery\n", "\nnamespace: science\n")
        )
        docs = kustomize(overlay)
    finally:
        hosts_file.write_text(original_hosts)
        kustomization.write_text(original_kustomization)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"science"}
    assert [d["metadata"]["name"] for d in of_kind(docs, "Namespace")] == ["science"]
    assert {s["namespace"] for b in of_kind(docs, "RoleBinding") for s in b["subjects"]} == {
        "science"
    }
    hosts = _hosts(docs)
    assert hosts.pop("hub ingress") == hosts.pop("BINDERY_HUB_URL") == "users.test.io"
    assert hosts.pop("ingress controller") == "traefik"
    assert set(hosts.values()) == {"portal.test.net"}
    hub_policy = one(docs, "NetworkPolicy", "bindery-hub")["spec"]["ingress"][0]["from"][0]
    assert hub_policy["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "traefik"
    }
    assert not [d for d in docs if d["metadata"]["name"] == "bindery-hosts"]  # local-config


# -- settings: the ConfigMap and the Secrets -------------------------------------------------


def _settings_source() -> str:
    return (ROOT / "portal" / "settings.py").read_text()


def test_the_configmap_runs_the_kubernetes_backend_in_production(rendered: list[Doc]) -> None:
    data = settings_data(rendered)
    assert data["BINDERY_BACKEND"] == "kubernetes"
    assert data["BINDERY_ENV"] == "production"
    assert data["BINDERY_K8S_KUBECONFIG"] == ""  # in-cluster: the pod's service account
    source = _settings_source()
    unknown = [key for key in data if f'"{key}"' not in source and key not in K8S_BACKEND_SETTINGS]
    assert not unknown, f"not settings that portal/settings.py reads: {unknown}"


def test_secrets_are_files_named_by_file_variables_never_values(rendered: list[Doc]) -> None:
    # nothing secret is rendered: the operator makes the Secrets (deploy/README.md)
    assert not of_kind(rendered, "Secret")
    data = settings_data(rendered)
    assert not SECRET_SETTINGS & set(data)
    # ...nor anything named like a secret, but the names of the operator's Secrets
    secret_names = {"BINDERY_REGISTRY_PUSH_SECRET", "BINDERY_K8S_IMAGE_PULL_SECRET"}
    assert not [k for k in data if re.search(r"(PASSWORD|SECRET|TOKEN)$", k)
                and k not in secret_names]  # fmt: skip
    for key in secret_names:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", data[key]), key  # a name
    hub = one(rendered, "Deployment", "bindery-hub")
    for workload in (d for d in rendered if d["kind"] in WORKLOADS):
        spec = pod_spec(workload)
        for c in containers(spec):
            assert not [s for s in c.get("envFrom", []) if "secretRef" in s]
            mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
            files: set[str] = set()
            for volume in spec.get("volumes", []):
                if "secret" in volume and volume["name"] in mounts:
                    items = volume["secret"].get("items")
                    assert items, "mount only the keys a container needs"
                    files |= {f"{mounts[volume['name']]}/{i['path']}" for i in items}
            for name, env in env_of(c).items():
                assert "secretKeyRef" not in env.get("valueFrom", {}), name
                if name.endswith("_FILE"):
                    assert env["value"] in files, f"{name}: {env['value']} is not mounted"
                elif name in SECRET_SETTINGS:
                    # only the hub's placeholders for settings it never uses (hub.yaml)
                    assert workload is hub and "unused" in env["value"], name


def test_each_process_gets_the_secrets_production_settings_require(rendered: list[Doc]) -> None:
    source = _settings_source()
    required = set(re.findall(r'_required_in_production\(\s*"(\w+)"', source))
    required |= {"DATABASE_URL", "REDIS_URL"}  # checked by name further down settings.py
    assert {"SECRET_KEY", "BINDERY_ENCRYPTION_KEY", "BINDERY_HUB_TOKEN"} <= required
    portal = (("bindery-web", "web"), ("bindery-worker", "worker"), ("bindery-beat", "beat"))
    for name, main in portal:
        env = env_of(container(one(rendered, "Deployment", name), main))
        assert {f"{s}_FILE" for s in required} <= set(env), name
    assert "EMAIL_URL_FILE" in env_of(container(one(rendered, "Deployment", "bindery-web"), "web"))
    # the registry's pull account: the worker before a build, web before reusing a build
    # (KubernetesBuilder.environment_exists, from request_build); beat asks no registry
    for name, main in portal:
        env = env_of(container(one(rendered, "Deployment", name), main))
        assert ("BINDERY_REGISTRY_PASSWORD_FILE" in env) is (main != "beat"), name
    hub = env_of(container(one(rendered, "Deployment", "bindery-hub"), "hub"))
    assert [n for n in hub if n.endswith("_FILE")] == ["BINDERY_HUB_TOKEN_FILE"]
    assert required - {"BINDERY_HUB_TOKEN"} <= set(hub)  # as placeholders (test above)


def _settings_env(docs: list[Doc], deployment: str, main: str, home: Path) -> dict[str, str]:
    """The environment the container would get: the ConfigMap, then its own env, with the
    secret files written under ``home`` (harmless values; addresses on 127.0.0.1 port 1)."""
    env = dict(settings_data(docs))
    fake = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": "postgres://bindery:pw@127.0.0.1:1/bindery",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "EMAIL_URL": "smtp+tls://bindery:pw@127.0.0.1:1",
    }
    for name, item in env_of(container(one(docs, "Deployment", deployment), main)).items():
        if "value" not in item:
            env[name] = "bindery"  # the downward API's namespace
        elif name.endswith("_FILE"):
            setting = name.removesuffix("_FILE")
            path = home / Path(item["value"]).name
            path.write_text(fake.get(setting, f"test-{setting.lower()}"))
            env[name] = str(path)
        else:
            env[name] = item["value"]
    return env | {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "BINDERY_VAR_DIR": str(home / "var"),
        "BINDERY_HUB_DIR": str(home / "hub"),
    }


def test_production_settings_accept_what_the_pods_get(
    production: list[Doc], tmp_path: Path
) -> None:
    """With the rendered configuration, `manage.py check --deploy` passes with no warning for
    the portal (every secret a file), and the hub writes its configuration from its token and
    the placeholders. Nothing is contacted."""
    runs = {}
    for deployment, main, argv in (
        ("bindery-web", "web", ["check", "--deploy", "--fail-level", "WARNING"]),
        ("bindery-hub", "hub", ["runhub", "--write-config"]),
    ):
        home = tmp_path / main
        home.mkdir()
        runs[main] = (
            home,
            subprocess.Popen(  # both at once: each is a Django start-up
                [sys.executable, "manage.py", *argv],
                cwd=ROOT,
                env=_settings_env(production, deployment, main, home),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    for main, (_home, run) in runs.items():
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, f"{main}:\n{out[-3000:]}\n{err[-3000:]}"
        if main == "web":
            assert "System check identified no issues" in out, f"{out}\n{err}"
    hub_config = (tmp_path / "hub" / "hub" / "jupyterhub_config.py").read_text()
    assert "c.JupyterHub.hub_bind_url = 'http://0.0.0.0:8081'" in hub_config
    assert "c.JupyterHub.public_url = 'https://hub.example-usercontent.org/'" in hub_config


# -- processes, probes, rollout --------------------------------------------------------------


def _procfile() -> dict[str, list[str]]:
    procs = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        words = shlex.split(command)
        if words and words[0] == "exec":
            words = words[1:]
        procs[name.strip()] = [w.removeprefix(".venv/bin/") for w in words]
    return procs


def test_processes_run_the_procfile_commands_under_the_image_entrypoint(
    rendered: list[Doc],
) -> None:
    procfile = _procfile()
    # on one machine beat is a thread of the one worker (portal/beat_thread.py); here workers
    # scale out, so beat is a singleton Deployment of its own and no worker runs it
    assert "beat" not in procfile and "--beat-thread" in procfile["worker"]
    procfile["beat"] = ["celery", "-A", "portal", "beat", "--loglevel=INFO"]
    for name in ("web", "worker", "beat", "hub"):
        c = container(one(rendered, "Deployment", f"bindery-{name}"), name)
        # args, not command: the image's ENTRYPOINT (tini) stays PID 1 (runhub needs a parent)
        assert "command" not in c, name
        # every word of the Procfile's command but those naming local paths and ports, and
        # the worker's pool: threads on one machine, prefork (with its time limits) here
        expected = [
            w
            for w in procfile[name]
            if "${" not in w
            and w != "--beat-thread"
            and not w.startswith(("--schedule=", "--concurrency=", "--pool="))
        ]
        assert [w for w in expected if w not in c["args"]] == [], name
        assert "--beat-thread" not in c["args"] and "-B" not in c["args"], name
        if name == "worker":
            assert not [w for w in c["args"] if w.startswith("--pool=") and w != "--pool=prefork"]
    web = container(one(rendered, "Deployment", "bindery-web"), "web")
    assert web["args"][-1] == "portal.asgi:application"
    assert web["ports"] == [{"name": "http", "containerPort": 8000}]
    for workload in (d for d in rendered if d["kind"] in WORKLOADS):
        for c in containers(pod_spec(workload)):
            if c["image"].startswith(("bindery", "registry.example.org/bindery/bindery")):
                assert "command" not in c


def test_probes_hit_the_health_endpoints(rendered: list[Doc]) -> None:
    assert resolve("/health").url_name == "health"
    assert resolve("/badge.svg").url_name == "badge"
    web = container(one(rendered, "Deployment", "bindery-web"), "web")
    assert web["readinessProbe"]["httpGet"]["path"] == "/health"
    assert web["readinessProbe"]["httpGet"]["port"] == "http"
    # restarts only when Django does not answer: the badge touches no database or Redis
    for probe in ("startupProbe", "livenessProbe"):
        assert web[probe]["httpGet"]["path"] == "/badge.svg"
    for probe in ("readinessProbe", "startupProbe", "livenessProbe"):
        headers = {h["name"]: h["value"] for h in web[probe]["httpGet"]["httpHeaders"]}
        assert headers["X-Forwarded-Proto"] == "https"  # else the HTTPS redirect answers
    hub = container(one(rendered, "Deployment", "bindery-hub"), "hub")
    for probe in ("readinessProbe", "startupProbe", "livenessProbe"):
        assert hub[probe]["httpGet"] == {"path": "/hub/health", "port": "api"}


def test_hub_ports_agree_with_the_settings_and_the_service(rendered: list[Doc]) -> None:
    data = settings_data(rendered)
    hub = container(one(rendered, "Deployment", "bindery-hub"), "hub")
    ports = {p["name"]: p["containerPort"] for p in hub["ports"]}
    assert data["BINDERY_HUB_BIND"] == f"0.0.0.0:{ports['proxy']}"
    assert data["BINDERY_HUB_API_BIND"] == f"0.0.0.0:{ports['api']}"
    assert data["BINDERY_HUB_PROXY_API_BIND"].startswith("127.0.0.1:")  # only the hub
    service = one(rendered, "Service", "bindery-hub")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    api = urlsplit(data["BINDERY_HUB_API_URL"])
    assert (api.hostname, api.port, api.path) == ("bindery-hub", ports["api"], "/hub/api")
    mounts = {m["mountPath"] for m in hub["volumeMounts"]}
    assert data["BINDERY_HUB_DIR"] in mounts
    volumes = pod_spec(one(rendered, "Deployment", "bindery-hub"))["volumes"]
    [state] = [v for v in volumes if v["name"] == "state"]
    assert one(rendered, "PersistentVolumeClaim", state["persistentVolumeClaim"]["claimName"])


def test_beat_and_hub_are_singletons_that_never_overlap(rendered: list[Doc]) -> None:
    for name in ("bindery-beat", "bindery-hub"):
        deployment = one(rendered, "Deployment", name)
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_beat_migrates_and_web_and_worker_wait_for_it(rendered: list[Doc]) -> None:
    beat = pod_spec(one(rendered, "Deployment", "bindery-beat"))
    assert [c["args"] for c in beat["initContainers"]] == [
        ["python", "manage.py", "migrate", "--noinput"]
    ]
    for name in ("bindery-web", "bindery-worker"):
        init = pod_spec(one(rendered, "Deployment", name))["initContainers"]
        assert len(init) == 1 and "manage.py migrate --check" in init[0]["args"][-1]
    hub = pod_spec(one(rendered, "Deployment", "bindery-hub"))
    assert not hub.get("initContainers")  # the hub uses no database


def test_the_overlay_sets_the_image(base: list[Doc], production: list[Doc]) -> None:
    overlay = yaml.safe_load(
        (DEPLOY / "overlays" / "production" / "kustomization.yaml").read_text()
    )
    [image] = [i for i in overlay["images"] if i["name"] == "bindery"]
    expected = f"{image['newName']}:{image['newTag']}"
    for docs, want in ((base, "bindery"), (production, expected)):
        ours = {
            c["image"] for d in docs if d["kind"] == "Deployment" for c in containers(pod_spec(d))
        }
        assert ours == {want}
    third_party = {
        c["image"] for d in production if d["kind"] == "DaemonSet" for c in containers(pod_spec(d))
    }
    assert all(":" in i and not i.endswith(":latest") for i in third_party)


# -- the image -------------------------------------------------------------------------------

INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, as docker's parser reads them: comments and blank
    lines dropped, backslash continuations joined; raises AssertionError on what it refuses."""
    parsed: list[tuple[str, str]] = []
    pending = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        if not full:
            continue
        word, _, rest = full.partition(" ")
        assert word.upper() in INSTRUCTIONS, f"line {number}: unknown instruction {word}"
        assert word == word.upper(), f"line {number}: write {word.upper()}"
        parsed.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continuation"
    return parsed


def test_the_dockerfile_parses_and_agrees_with_the_project() -> None:
    """Parsed and checked here; not built (no docker daemon on these machines)."""
    instructions = parse_dockerfile((DEPLOY / "Dockerfile").read_text())
    args = {
        k: v
        for op, rest in instructions
        if op == "ARG" and "=" in rest
        for k, v in [rest.split("=", 1)]
    }
    stages: list[str] = []
    for op, rest in instructions:
        if op == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            assert ":" in image and not image.endswith(":latest"), image
            if len(words) == 3:
                assert words[1].upper() == "AS"
                stages.append(words[2])
        if op in ("CMD", "ENTRYPOINT"):
            assert isinstance(json.loads(rest), list), f"{op} must be the exec form"
        if op == "COPY":
            words = [w for w in rest.split() if not w.startswith("--")]
            source_from = [w for w in rest.split() if w.startswith("--from=")]
            if source_from:
                assert source_from[0].removeprefix("--from=") in stages
            else:
                for source in words[:-1]:
                    assert (ROOT / source).exists(), f"COPY {source}: not in the project"
    first_from = [rest for op, rest in instructions if op == "FROM"]
    assert len(first_from) == 3 and first_from[-1] == "${PYTHON_IMAGE}"

    # the Python and uv of the project, node new enough for configurable-http-proxy
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11,<3.12"' in pyproject
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    uv_lock = (ROOT / "uv.lock").read_text()
    uv_version = re.search(r'\nname = "uv"\nversion = "([^"]+)"', uv_lock)
    assert uv_version
    runs = " ".join(rest for op, rest in instructions if op == "RUN")
    assert f'"uv=={uv_version.group(1)}"' in runs
    assert "uv sync --frozen --no-dev" in runs
    lock = json.loads((ROOT / "proxy" / "package-lock.json").read_text())
    engines = lock["packages"]["node_modules/configurable-http-proxy"]["engines"]["node"]
    node_major = re.match(r"node:(\d+)-", args["NODE_IMAGE"])
    needed = re.fullmatch(r">=\s*(\d+)", engines)
    assert node_major and needed, (args["NODE_IMAGE"], engines)
    assert int(node_major.group(1)) >= int(needed.group(1))
    assert "npm ci --omit=dev" in runs

    # static files at build time, with production settings; a non-root user; tini as PID 1
    assert "BINDERY_ENV=production" in runs and "manage.py collectstatic --noinput" in runs
    user = [rest for op, rest in instructions if op == "USER"][-1]
    assert int(user.split(":")[0]) >= 1000
    assert json.loads([rest for op, rest in instructions if op == "ENTRYPOINT"][-1]) == [
        "/usr/bin/tini",
        "--",
    ]
    env = " ".join(rest for op, rest in instructions if op == "ENV")
    assert "BINDERY_VAR_DIR=/app/var" in env  # static files under it, read-only at run time
    sources = [
        d for f in (DEPLOY / "base").glob("*.yaml") for d in yaml.safe_load_all(f.read_text())
    ]
    for workload in (d for d in sources if d and d["kind"] == "Deployment"):
        assert pod_spec(workload)["securityContext"]["runAsUser"] == int(user.split(":")[0])

    # the build context: everything excluded, then what COPY needs let in (never var/,
    # .venv, .env, .git)
    ignore = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "**"
    let_in = {line.removeprefix("!") for line in ignore if line.startswith("!")}
    copied = {
        w
        for op, rest in instructions
        if op == "COPY" and "--from=" not in rest
        for w in rest.split()[:-1]
    }
    assert copied == let_in
    assert not let_in & {"var", ".venv", ".env", ".git", "proxy/node_modules"}


# -- documentation ---------------------------------------------------------------------------


def test_no_document_still_says_deploy_is_empty() -> None:
    for path in (ROOT / "README.md", DEPLOY / "README.md"):
        text = path.read_text().lower()
        assert "nothing is here yet" not in text, path
        assert "(to come)" not in text, path
