"""``KubernetesBuilder``: a repository version → an image in the registry, built by
repo2docker in a pod.

``build`` does, in order:

1. **Key and names** (``names``): the environment key from the resolved repository and the
   repo2docker image; the image ``<BINDERY_REGISTRY_PREFIX><slug>:<key>``; the pod
   ``build-<slug>-<key>``.
2. **Ask the registry** (``registry``): when the image is there, the build is ready at once
   (reused) and no pod is made.
3. **Create the pod** (``pods``), with a Secret holding the git credential first when the
   repository is private (made the pod's own once the pod exists, so it goes with the pod).
   409 AlreadyExists means another build of the same key is running: this one follows that
   pod (two launches at once → one pod). A finished pod of that name is deleted (only that
   one: the delete carries its uid) and made again — unless it succeeded and the image is in
   the registry by now.
4. **Follow** the pod (``follow``: its log into the build log) and watch its phase until it
   ends: Succeeded → the result; Failed → ``BUILD_FAILED`` with repo2docker's failure (or
   the log's last meaningful line, or the container's reason); Pending longer than
   BINDERY_K8S_BUILD_PENDING_TIMEOUT → ``BUILD_POD_PENDING`` with the scheduler's or the
   kubelet's message, and the pod is deleted; past the build's deadline → ``BUILD_TIMEOUT``,
   deleted; cancelled → ``BUILD_CANCELLED``, deleted when this build made it.

Finished pods stay for BINDERY_K8S_BUILD_POD_TTL seconds (their log is the operator's);
``cleaner.clean_build_pods`` (the worker's task ``clean_build_pods``, which beat schedules)
removes them. The credential Secret is deleted as soon
as the pod's container has started (it has read its environment) or the pod is gone.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from apps.builds.backends.base import BuildRequest, BuildResult, LogSink
from apps.builds.backends.kubernetes import names, pods
from apps.builds.backends.kubernetes.cluster import Cluster, core_api
from apps.builds.backends.kubernetes.follow import LogFollower
from apps.builds.backends.kubernetes.options import BuildOptions
from apps.builds.backends.kubernetes.registry import Registry
from apps.repos.types import GitCredential, ResolvedRepo
from portal.errors import BackendError

log = logging.getLogger(__name__)

_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_FINISHED = ("Succeeded", "Failed")


@dataclass
class _Job:
    """One call of ``build``: its request, log and clock."""

    request: BuildRequest
    log: LogSink
    deadline: float
    timeout: float

    def check(self) -> None:
        if self.request.cancel.is_set():
            raise BackendError("The build was cancelled.", code="BUILD_CANCELLED")
        if time.monotonic() >= self.deadline:
            raise BackendError(
                f"The build took longer than {self.timeout:g} s and was stopped.",
                code="BUILD_TIMEOUT",
            )


@dataclass
class _Pod:
    name: str
    uid: str
    created: bool  # by this build (not joined)
    # Whether its credential Secret must stay: until the container has read its environment,
    # unless the pod ended or was deleted.
    needs_secret: bool = True
    secret: str | None = None  # its credential Secret, while there is one


class KubernetesBuilder:
    """Builds images with repo2docker in build pods (see the module docstring)."""

    def __init__(
        self,
        *,
        api: client.CoreV1Api | None = None,
        registry: Registry | None = None,
        options: BuildOptions | None = None,
        poll_every: float = 1.0,
        log_read_timeout: float = 60.0,
    ) -> None:
        self.options = options or BuildOptions.from_settings()
        self.cluster = Cluster(api or core_api(), self.options.namespace, self.options.api_timeout)
        self.registry = registry or Registry.from_settings()
        self.poll_every = poll_every
        self.log_read_timeout = log_read_timeout

    # -- the Builder protocol ------------------------------------------------------------

    def build(self, request: BuildRequest, log: LogSink) -> BuildResult:
        """Build (or find) the image of ``request.repo``.

        Returns a BuildResult whose ``environment_path`` is the image; ``python_version``,
        ``config_files`` and ``packages`` are empty (they are inside the image, which the
        builder does not read). Raises BackendError: BUILD_FAILED, BUILD_POD_PENDING,
        BUILD_TIMEOUT, BUILD_CANCELLED, BUILD_POD_LOST (transient), UNSUPPORTED_BY_BACKEND,
        K8S_* and REGISTRY_* (``cluster``, ``registry``). Safe to call twice and at once for
        the same key: one pod is made, every call follows it.
        """
        timeout = min(request.timeout, self.options.build_timeout)
        job = _Job(request, log, time.monotonic() + timeout, timeout)
        repo = request.repo
        _check_repo(repo)
        key = names.environment_key(repo, self.options.build_image)
        image = names.image_name(self.options.registry_prefix, repo, key)
        name = names.pod_name(repo, key)
        durations: dict[str, float] = {}
        job.check()

        started = time.monotonic()
        log(f"Looking for {image} in the registry", phase="fetching")
        found = self.registry.image_exists(image)
        durations["registry"] = round(time.monotonic() - started, 3)
        if found:
            log("The image is in the registry already: nothing to build.", phase="built")
            return self._result(key, image, reused=True, durations=durations)

        credential = _credential_for(repo, request.credentials)
        secret = None
        if credential is not None:
            secret = names.credential_secret_name(name, secrets.token_hex(4))
            manifest = pods.credential_secret(secret, pod=name, key=key, credential=credential)
            self.cluster.create_secret(manifest)
        pod: _Pod | None = None
        try:
            pod = self._start(job, name, key, repo, image, secret)
            if pod is None:  # it succeeded meanwhile: the image is there
                log("Another build of this version pushed the image.", phase="built")
                return self._result(key, image, reused=True, durations=durations)
            if secret is not None and pod.created:
                pod.secret = secret
                self._own(pod)
            elif secret is not None:  # the running pod has a Secret of its own
                self._forget_secret(secret)
            secret = None
            started = time.monotonic()
            self._watch(job, pod)
            durations["build"] = round(time.monotonic() - started, 3)
        finally:
            if secret is not None:  # no pod was made
                self._forget_secret(secret)
            if pod is not None and pod.secret is not None and not pod.needs_secret:
                self._forget_secret(pod.secret)
        log(f"Pushed {image}", phase="built")
        return self._result(key, image, reused=False, durations=durations)

    def environment_exists(self, result: BuildResult) -> bool:
        """Whether the result's image is still in the registry. When the registry cannot
        say (unreachable, refused), True: a launch then fails on the image pull with the
        registry's own words, rather than every launch rebuilding."""
        try:
            return self.registry.image_exists(result.environment_path)
        except BackendError as exc:
            log.warning("could not ask the registry for %s: %s", result.environment_path, exc)
            return True

    def mark_used(self, result: BuildResult) -> None:
        """Nothing to record: images are kept (and pruned) by the registry's own policy."""

    # -- steps ---------------------------------------------------------------------------

    def _result(
        self, key: str, image: str, *, reused: bool, durations: dict[str, float]
    ) -> BuildResult:
        return BuildResult(
            environment_key=key,
            environment_path=image,
            checkout_path="",
            python_version="",
            config_files=(),
            packages=(),
            reused=reused,
            durations=durations,
        )

    def _start(
        self, job: _Job, name: str, key: str, repo: ResolvedRepo, image: str, secret: str | None
    ) -> _Pod | None:
        """Create the pod, or join the running one of that name. None: a finished pod of
        that name succeeded and its image is in the registry now."""
        manifest = pods.build_pod(
            self.options, name=name, key=key, repo=repo, image=image, credential_secret=secret
        )
        while True:
            job.check()
            created = self.cluster.create_pod(manifest)
            if created is not None:
                job.log(f"Started the build pod {name}", phase="waiting")
                return _Pod(name, _uid(created), created=True)
            existing = self.cluster.read_pod(name)
            if existing is None:  # deleted between our create and read: create again
                job.request.cancel.wait(self.poll_every)
                continue
            phase = existing.status.phase if existing.status else None
            if existing.metadata is not None and existing.metadata.deletion_timestamp:
                job.request.cancel.wait(self.poll_every)  # on its way out
                continue
            if phase not in _FINISHED:
                job.log(f"Following the build pod {name}, started by another build",
                        phase="waiting")  # fmt: skip
                return _Pod(name, _uid(existing), created=False)
            if phase == "Succeeded" and self.registry.image_exists(image):
                return None
            job.log(f"Removing the finished build pod {name} of an earlier build",
                    phase="waiting")  # fmt: skip
            self.cluster.delete_pod(name, uid=_uid(existing))

    def _own(self, pod: _Pod) -> None:
        assert pod.secret is not None
        try:
            self.cluster.own_secret(pod.secret, pods.owner_patch(pod.name, pod.uid))
        except BackendError as exc:  # the Secret is deleted once the container starts anyway
            log.warning("could not make %s the owner of %s: %s", pod.name, pod.secret, exc)

    def _forget_secret(self, secret: str) -> None:
        try:
            self.cluster.delete_secret(secret)
        except BackendError as exc:  # owned by the pod, and the cleaner's to find otherwise
            log.warning("could not delete the credential Secret %s: %s", secret, exc)

    def _watch(self, job: _Job, pod: _Pod) -> None:
        """Follow ``pod`` to its end: returns when it succeeded, raises otherwise. The
        credential Secret is deleted as soon as the container has started."""
        follower = LogFollower(
            self.cluster, pod.name, job.log,
            retry_every=self.poll_every, read_timeout=self.log_read_timeout,
        )  # fmt: skip
        follower.start()
        pending_since = time.monotonic()
        said = ""
        try:
            while True:
                try:
                    job.check()
                except BackendError as exc:
                    if exc.code == "BUILD_TIMEOUT" or pod.created:
                        self.cluster.delete_pod(pod.name, uid=pod.uid)
                        pod.needs_secret = False
                    raise
                current = self.cluster.read_pod(pod.name)
                if current is None or _uid(current) != pod.uid:
                    pod.needs_secret = False
                    raise BackendError(
                        f"The build pod {pod.name} was deleted before it finished.",
                        permanent=False,
                        code="BUILD_POD_LOST",
                    )
                status = current.status or client.V1PodStatus()
                if status.phase in _FINISHED:
                    pod.needs_secret = False
                    follower.stop(wait=self.options.api_timeout)
                    if status.phase == "Succeeded":
                        return
                    raise BackendError(_failure(pod.name, follower, current), code="BUILD_FAILED")
                if status.phase == "Pending" and not _container_running(status):
                    waiting = _waiting_for(status)
                    if waiting != said:
                        job.log(f"Waiting for the build pod: {waiting}", phase="waiting")
                        said = waiting
                    if time.monotonic() - pending_since > self.options.pending_timeout:
                        self.cluster.delete_pod(pod.name, uid=pod.uid)
                        pod.needs_secret = False
                        raise BackendError(
                            f"The build pod did not start within "
                            f"{self.options.pending_timeout:g} s: {waiting}",
                            code="BUILD_POD_PENDING",
                        )
                elif pod.needs_secret:
                    pod.needs_secret = False  # the container has read its environment
                    if pod.secret is not None:
                        self._forget_secret(pod.secret)
                        pod.secret = None
                job.request.cancel.wait(self.poll_every)
        finally:
            follower.stop()


def _uid(pod: client.V1Pod) -> str:
    return str(pod.metadata.uid or "") if pod.metadata else ""


def _check_repo(repo: ResolvedRepo) -> None:
    if repo.kind != "git":
        raise BackendError(
            f"{repo.display_name} is a {repo.kind} record: the kubernetes backend builds git "
            "repositories only so far.",
            code="UNSUPPORTED_BY_BACKEND",
        )
    if not _COMMIT.fullmatch(repo.resolved_ref):
        raise BackendError(
            f"{repo.resolved_ref!r} is not a resolved commit.", code="UNSUPPORTED_BY_BACKEND"
        )
    if not repo.repo_url.startswith(("https://", "http://")):
        raise BackendError(
            "The kubernetes backend clones over HTTP(S) only.", code="UNSUPPORTED_BY_BACKEND"
        )


def _credential_for(
    repo: ResolvedRepo, credentials: tuple[GitCredential, ...]
) -> GitCredential | None:
    host = repo.host.lower()
    return next((c for c in credentials if c.host.lower() == host), None)


def _container_running(status: client.V1PodStatus) -> bool:
    return any(
        s.state is not None and (s.state.running is not None or s.state.terminated is not None)
        for s in status.container_statuses or []
    )


def _waiting_for(status: client.V1PodStatus) -> str:
    """What a Pending pod waits for, in the scheduler's or the kubelet's words."""
    for container in status.container_statuses or []:
        waiting = container.state.waiting if container.state else None
        if waiting is not None and (waiting.reason or waiting.message):
            return ": ".join(p for p in (waiting.reason, waiting.message) if p)
    for condition in status.conditions or []:
        if condition.status == "False" and (condition.reason or condition.message):
            return ": ".join(p for p in (condition.reason, condition.message) if p)
    return status.message or status.reason or "not scheduled yet"


def _failure(name: str, follower: LogFollower, pod: client.V1Pod) -> str:
    """The sentence a failed build pod's build fails with."""
    status: Any = pod.status
    why = follower.reason()
    if not why and status is not None:
        for container in status.container_statuses or []:
            ended = container.state.terminated if container.state else None
            if ended is not None:
                why = ended.message or f"{ended.reason or 'exited'} (exit code {ended.exit_code})"
        why = why or status.message or status.reason or ""
    return f"repo2docker failed to build the image: {why or 'no reason given'} (pod {name})."
