"""The manifests the builder creates: the build pod and the Secret with a private
repository's git credential. Plain dicts in the API's own spelling, so what is tested (and
validated against the Kubernetes OpenAPI schemas) is exactly what is sent.

The pod runs repo2docker as BinderHub's ``KubernetesBuildExecutor`` does: the docker daemon's
socket from the node (a hostPath), the registry's push credentials from a Secret mounted as
docker's ``config.json``, the git credential in ``GIT_CREDENTIAL_ENV`` — which the repo2docker
image's ``git-credential-env`` helper hands to git — taken from a Secret (``secretKeyRef``),
so the token is in no argv and nowhere in the pod's spec.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlsplit

from apps.builds.backends.kubernetes import names
from apps.builds.backends.kubernetes.options import BuildOptions, quantity_bytes
from apps.repos.types import GitCredential, ResolvedRepo

CONTAINER = "builder"
CREDENTIAL_KEY = "credential"  # the key in the credential Secret
DOCKER_CONFIG = "/root/.docker"  # the push Secret's config.json is mounted here
DOCKER_SOCKET = "/var/run/docker.sock"  # where repo2docker looks for the daemon


# repo2docker itself only clones, writes a build context under /tmp and talks to the docker
# daemon through its socket; the build steps run in the daemon, not in this container. So:
# no capabilities, no privilege escalation, the runtime's seccomp profile. It stays uid 0:
# the daemon's socket is root's with mode 0660, so its owner connects without any
# capability, while another uid would need the socket's group, which is the daemon's own
# (bindery-dind's and a node's dockerd differ). That and the socket's hostPath keep build
# pods out of Pod Security "restricted" (the hostPath out of "baseline" too): see
# deploy/base/namespace.yaml.
CONTAINER_SECURITY: dict[str, Any] = {
    "runAsUser": 0,
    "runAsNonRoot": False,
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def repo2docker_args(repo: ResolvedRepo, image: str, opts: BuildOptions) -> list[str]:
    """repo2docker's command line (the repository last: what follows it would be taken for
    the command to run)."""
    args = [
        "jupyter-repo2docker",
        "--ref", repo.resolved_ref,
        "--image-name", image,
        "--no-clean",
        "--no-run",
        "--json-logs",
        "--user-name", "jovyan",
        "--user-id", "1000",
        "--push",
    ]  # fmt: skip
    if opts.memory_limit:
        # The build runs in the node's docker daemon, outside this pod's cgroup: the pod's
        # limit does not bind it, repo2docker's does (as BinderHub passes it).
        args += ["--build-memory-limit", str(quantity_bytes(opts.memory_limit))]
    return [*args, repo.repo_url]


def credential_helper_env(repo: ResolvedRepo, secret: str) -> list[dict[str, Any]]:
    """The environment that gives git the credential for the repository's host only.

    The repo2docker image configures ``credential.helper env`` system-wide, which would hand
    the token to every host git talks to (a submodule elsewhere included). Git's
    ``GIT_CONFIG_COUNT`` entries come last: an empty ``credential.helper`` clears that list,
    then the helper is named again for this host's URL alone.
    """
    parts = urlsplit(repo.repo_url)
    return [
        {"name": "GIT_CREDENTIAL_ENV",
         "valueFrom": {"secretKeyRef": {"name": secret, "key": CREDENTIAL_KEY}}},
        {"name": "GIT_CONFIG_COUNT", "value": "2"},
        {"name": "GIT_CONFIG_KEY_0", "value": "credential.helper"},
        {"name": "GIT_CONFIG_VALUE_0", "value": ""},
        {"name": "GIT_CONFIG_KEY_1", "value": f"credential.{parts.scheme}://{parts.netloc}.helper"},
        {"name": "GIT_CONFIG_VALUE_1", "value": "env"},
    ]  # fmt: skip


def _resources(opts: BuildOptions) -> dict[str, dict[str, str]]:
    requests = {"cpu": opts.cpu_request, "memory": opts.memory_request}
    limits = {"cpu": opts.cpu_limit, "memory": opts.memory_limit}
    out = {
        "requests": {k: v for k, v in requests.items() if v},
        "limits": {k: v for k, v in limits.items() if v},
    }
    return {k: v for k, v in out.items() if v}


def build_pod(
    opts: BuildOptions,
    *,
    name: str,
    key: str,
    repo: ResolvedRepo,
    image: str,
    credential_secret: str | None = None,
) -> dict[str, Any]:
    """The build pod ``name`` building ``repo`` into ``image``; ``credential_secret`` names
    the Secret with the git credential of a private repository."""
    env: list[dict[str, Any]] = [{"name": "DOCKER_CONFIG", "value": DOCKER_CONFIG}]
    if credential_secret:
        env += credential_helper_env(repo, credential_secret)
    mounts: list[dict[str, Any]] = [{"name": "docker-socket", "mountPath": DOCKER_SOCKET}]
    volumes: list[dict[str, Any]] = [
        {"name": "docker-socket", "hostPath": {"path": opts.docker_socket, "type": "Socket"}}
    ]
    if opts.push_secret:
        mounts.append({"name": "docker-config", "mountPath": DOCKER_CONFIG, "readOnly": True})
        volumes.append(
            {
                "name": "docker-config",
                "secret": {
                    "secretName": opts.push_secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": opts.build_image,
        "imagePullPolicy": "IfNotPresent",
        "args": repo2docker_args(repo, image, opts),
        "env": env,
        "volumeMounts": mounts,
        "securityContext": copy.deepcopy(CONTAINER_SECURITY),
    }
    resources = _resources(opts)
    if resources:
        container["resources"] = resources
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # repo2docker needs no Kubernetes API; a token in the pod would only be a gift.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": volumes,
    }
    if opts.node_selector:
        spec["nodeSelector"] = dict(opts.node_selector)
    if opts.tolerations:
        spec["tolerations"] = [dict(t) for t in opts.tolerations]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {names.LABEL_COMPONENT: names.COMPONENT, names.LABEL_KEY: key},
            "annotations": {
                "bindery.io/repo": repo.repo_url,
                "bindery.io/ref": repo.resolved_ref,
                "bindery.io/image": image,
            },
        },
        "spec": spec,
    }


def credential_value(credential: GitCredential) -> str:
    """What ``git-credential-env`` prints for git: the helper protocol's attribute lines."""
    for part in (credential.username, credential.token):
        if "\n" in part or "\r" in part or "\0" in part:
            raise ValueError("a git credential cannot hold a line break")
    return f"username={credential.username}\npassword={credential.token}\n"


def credential_secret(
    name: str, *, pod: str, key: str, credential: GitCredential
) -> dict[str, Any]:
    """The Secret ``name`` holding ``credential`` for the build pod ``pod``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "labels": {
                names.LABEL_COMPONENT: names.COMPONENT,
                names.LABEL_KEY: key,
                names.LABEL_POD: pod,
            },
        },
        "stringData": {CREDENTIAL_KEY: credential_value(credential)},
    }


def owner_patch(pod: str, uid: str) -> dict[str, Any]:
    """A patch making the pod ``pod`` (``uid``) the owner of a Secret: the garbage collector
    deletes the Secret with the pod."""
    return {"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}
    ]}}  # fmt: skip
