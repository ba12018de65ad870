"""``BINDERY_BACKEND=kubernetes``: ``manage.py check`` passes with a valid configuration,
names each problem of an invalid one, and contacts nothing; production refuses to start
without a registry prefix; /versions names the builder and repo2docker's image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from apps.builds.checks import kubernetes_check
from apps.builds.tests.k8s_double import KubeDouble

ROOT = Path(__file__).resolve().parents[3]
VALID = {
    "BINDERY_BACKEND": "kubernetes",
    "BINDERY_REGISTRY_PREFIX": "registry.example.org/bindery/",
    "BINDERY_REGISTRY_PUSH_SECRET": "bindery-registry-push",
    "BINDERY_K8S_BUILD_NODE_SELECTOR": '{"bindery.io/node-purpose": "build"}',
    "BINDERY_K8S_BUILD_TOLERATIONS": '[{"key": "bindery.io/dedicated", "operator": "Exists"}]',
    # the hub's Service: user pods reach its API there (bindery.W030 warns about loopback)
    "BINDERY_HUB_API_URL": "http://bindery-hub:8081/hub/api",
}


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BINDERY_", "DJANGO_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_passes_with_a_valid_kubernetes_configuration(tmp_path):
    result = _manage("check", "--fail-level", "WARNING", BINDERY_VAR_DIR=str(tmp_path), **VALID)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_refuses_kubernetes_without_a_registry_prefix(tmp_path):
    production = {
        "BINDERY_ENV": "production",
        "SECRET_KEY": "p" * 64,
        "DATABASE_URL": "postgres://bindery@127.0.0.1:5432/bindery",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "ALLOWED_HOSTS": "bindery.example.org",
        "BINDERY_ENCRYPTION_KEY": "Tz0GJmDmPpA-9gYq8AxOvQ4x2bHqS2V8CSd8Yd4u8eE=",
        "BINDERY_HUB_TOKEN": "h" * 64,
        "BINDERY_SITE_URL": "https://bindery.example.org",
        "BINDERY_HUB_URL": "https://hub.example.net",
    }
    env = {**production, **VALID, "BINDERY_REGISTRY_PREFIX": ""}
    result = _manage("check", BINDERY_VAR_DIR=str(tmp_path), **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "BINDERY_REGISTRY_PREFIX must be set when BINDERY_BACKEND=kubernetes" in result.stderr


@pytest.fixture
def kubernetes(settings: Any) -> Any:
    settings.BINDERY_BACKEND = "kubernetes"
    settings.BINDERY_REGISTRY_PREFIX = VALID["BINDERY_REGISTRY_PREFIX"]
    settings.BINDERY_REGISTRY_PUSH_SECRET = VALID["BINDERY_REGISTRY_PUSH_SECRET"]
    return settings


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("BINDERY_REGISTRY_PREFIX", "", "BINDERY_REGISTRY_PREFIX must say where"),
        ("BINDERY_REGISTRY_PREFIX", "Registry.Example.org/UPPER/", "does not make valid image"),
        ("BINDERY_K8S_NAMESPACE", "Not_A_Namespace", "must be a namespace name"),
        ("BINDERY_K8S_BUILD_IMAGE", "quay.io/jupyterhub/repo2docker", "must be pinned"),
        ("BINDERY_K8S_BUILD_TOLERATIONS", '[{"key":', "is not valid JSON"),
        ("BINDERY_K8S_BUILD_TOLERATIONS", [{"colour": "blue"}], "list of tolerations"),
        ("BINDERY_K8S_BUILD_NODE_SELECTOR", {"zone": 3}, "JSON object of strings"),
        ("BINDERY_K8S_BUILD_MEMORY_LIMIT", "4 gigs", "must be a Kubernetes quantity"),
        ("BINDERY_K8S_BUILD_PENDING_TIMEOUT", 0, "above 0"),
        ("BINDERY_K8S_DOCKER_SOCKET", "docker.sock", "absolute path"),
        ("BINDERY_K8S_KUBECONFIG", "/nonexistent/kubeconfig", "which is not a file"),
        ("BINDERY_REGISTRY_URL", "registry.example.org", "the registry's base URL"),
    ],
)
def test_check_names_each_problem(kubernetes, name, value, said):
    setattr(kubernetes, name, value)
    errors = [m for m in kubernetes_check() if m.id == "bindery.E020"]
    assert len(errors) == 1 and said in errors[0].msg, errors
    with pytest.raises(SystemCheckError):
        call_command("check")


def test_check_contacts_no_cluster(kubernetes, tmp_path):
    double = KubeDouble()
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: d\n"
            f"clusters: [{{name: d, cluster: {{server: '{double.url}'}}}}]\n"
            "users: [{name: u, user: {token: t}}]\n"
            "contexts: [{name: d, context: {cluster: d, user: u}}]\n"
        )
        kubernetes.BINDERY_K8S_KUBECONFIG = str(kubeconfig)
        call_command("check")
        assert double.requests == []
    finally:
        double.close()


def test_check_warns_about_pushing_without_credentials(kubernetes):
    kubernetes.BINDERY_REGISTRY_PUSH_SECRET = ""
    assert [m.id for m in kubernetes_check()] == ["bindery.W020"]


def test_check_warns_about_a_build_timeout_the_task_limit_cuts_short(kubernetes):
    kubernetes.BINDERY_K8S_BUILD_TIMEOUT = kubernetes.BINDERY_BUILD_TIMEOUT + 600
    assert [m.id for m in kubernetes_check()] == ["bindery.W021"]


def test_check_says_nothing_for_the_local_backend(settings):
    settings.BINDERY_BACKEND = "local"
    settings.BINDERY_REGISTRY_PREFIX = ""
    assert kubernetes_check() == []


def test_versions_name_the_kubernetes_builder_and_repo2docker(kubernetes, client, db):
    body = client.get("/versions").json()
    image = kubernetes.BINDERY_K8S_BUILD_IMAGE
    assert body["backend"] == "kubernetes"
    assert body["builder"] == f"bindery-kubernetes:1 {image}"
    assert body["builder_info"] == {"build_image": image}
    assert "pythons" not in body
