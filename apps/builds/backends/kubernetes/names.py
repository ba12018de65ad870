"""Names derived from an environment key: deterministic, so two builds of one repository
version meet at one pod (BinderHub's ``_generate_build_name``), and the image is found in the
registry before any pod is made.

The key is BinderHub's: the resolved repository (provider, URL, commit) and the builder
(repo2docker's image). There is no dependency-file hashing as in the local backend: the
commit is the key, since repo2docker bakes the whole repository into the image.
"""

from __future__ import annotations

import hashlib
import json
import re

from apps.repos.types import ResolvedRepo

BUILDER_VERSION = "1"  # part of every key: a change here rebuilds every image

COMPONENT = "bindery-build"  # value of the "component" label of build pods and their Secrets
LABEL_COMPONENT = "component"
LABEL_KEY = "bindery.io/environment-key"
LABEL_POD = "bindery.io/build-pod"  # on a credential Secret: the pod it was made for

MAX_NAME = 63  # a DNS-1123 label: pod names are used as host names
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# The image reference grammar repo2docker validates ``--image-name`` against (registry host
# with an optional port, lowercase path components, a tag).
_HOST = r"(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?"  # noqa: E501
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-*)[a-z0-9]+)*"
_IMAGE = re.compile(rf"(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*:[\w][\w.-]{{0,127}}")


def environment_key(repo: ResolvedRepo, build_image: str) -> str:
    """32 hex digits naming what ``repo`` builds into with repo2docker ``build_image``."""
    material = {
        "builder": f"kubernetes-{BUILDER_VERSION}",
        "build_image": build_image,
        "provider": repo.provider,
        "repo_url": repo.repo_url,
        "ref": repo.resolved_ref,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def image_name(prefix: str, repo: ResolvedRepo, key: str) -> str:
    """``<prefix><slug>:<key>``, e.g. ``registry.example.org/bindery/org-repo-1a2b3c4d:<key>``."""
    return f"{prefix}{repo.slug}:{key}"


def is_valid_image(image: str) -> bool:
    return _IMAGE.fullmatch(image) is not None


def pod_name(repo: ResolvedRepo, key: str) -> str:
    """``build-<slug>-<12 hex of the key>``: at most 63 characters, a DNS label."""
    head = f"build-{repo.slug}"[: MAX_NAME - 13].rstrip("-")
    name = f"{head}-{key[:12]}"
    assert is_dns_label(name), name
    return name


def credential_secret_name(pod: str, suffix: str) -> str:
    """The Secret holding one build attempt's git credential (``suffix``: random, so a stale
    Secret of an earlier attempt never hands its old token to a new pod)."""
    return f"{pod}-git-{suffix}"


def is_dns_label(name: str) -> bool:
    return len(name) <= MAX_NAME and _DNS_LABEL.fullmatch(name) is not None


def split_image(image: str) -> tuple[str, str, str]:
    """(registry host, repository, tag) of ``image``; the host is "" when the image names
    none (Docker Hub), as docker reads references."""
    name, _, tag = image.rpartition(":")
    if "/" in tag or not name:  # "host:port/repo" without a tag
        name, tag = image, ""
    first, _, rest = name.partition("/")
    if rest and (first == "localhost" or "." in first or ":" in first):
        return first, rest, tag
    return "", name, tag
