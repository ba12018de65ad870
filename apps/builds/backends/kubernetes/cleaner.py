"""Deletes what builds leave in the namespace (the worker's task ``clean_build_pods``, every
5 minutes as beat schedules it; BinderHub's ``cleanup_builds``):

- build pods (label ``component=bindery-build``) that finished — Succeeded or Failed — more
  than BINDERY_K8S_BUILD_POD_TTL seconds ago; a running or pending one only when it is older
  than any build could wait for it (the build timeout, the pending timeout and the TTL
  together: its worker is gone);
- credential Secrets older than ``ORPHAN_AFTER`` whose pod has finished or is gone (the
  builder deletes them once the container has started, and a pod's Secret is its own: the
  garbage collector takes it with the pod; these are what a worker that died left).

Each pod is deleted by uid, so a pod made again under the same name meanwhile stays.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from kubernetes import client

from apps.builds.backends.kubernetes import names
from apps.builds.backends.kubernetes.cluster import Cluster
from apps.builds.backends.kubernetes.options import BuildOptions

log = logging.getLogger(__name__)

ORPHAN_AFTER = timedelta(minutes=10)
SELECTOR = f"{names.LABEL_COMPONENT}={names.COMPONENT}"


def _finished_at(pod: client.V1Pod) -> datetime | None:
    status = pod.status
    if status is None or status.phase not in ("Succeeded", "Failed"):
        return None
    ends = [
        s.state.terminated.finished_at
        for s in status.container_statuses or []
        if s.state is not None and s.state.terminated is not None and s.state.terminated.finished_at
    ]
    created = pod.metadata.creation_timestamp if pod.metadata else None
    return max(ends, default=None) or status.start_time or created


def clean_build_pods(
    cluster: Cluster, options: BuildOptions, now: datetime | None = None
) -> list[str]:
    """Delete finished build pods older than the TTL, abandoned ones, and the credential
    Secrets nothing needs. Returns the names of the pods deleted. Safe to run any time,
    twice, and beside running builds. Raises BackendError when the API cannot be asked."""
    now = now or datetime.now(UTC)
    ttl = timedelta(seconds=options.pod_ttl)
    abandoned = timedelta(seconds=options.build_timeout + options.pending_timeout) + ttl
    deleted: list[str] = []
    live: set[str] = set()  # pods that stay and have not finished: their Secret may be read
    for pod in cluster.list_pods(SELECTOR):
        meta = pod.metadata
        if meta is None or not meta.name:
            continue
        finished, created = _finished_at(pod), meta.creation_timestamp
        phase = pod.status.phase if pod.status else None
        if finished is not None and now - finished > ttl:
            why = f"{phase} at {finished.isoformat()}"
        elif finished is None and created is not None and now - created > abandoned:
            why = f"{phase or 'no phase'} since {created.isoformat()}"
        else:
            if finished is None:
                live.add(meta.name)
            continue
        if cluster.delete_pod(meta.name, uid=meta.uid):
            log.info("deleted build pod %s (%s)", meta.name, why)
            deleted.append(meta.name)
    for secret in cluster.list_secrets(SELECTOR):
        meta = secret.metadata
        if meta is None or not meta.name:
            continue
        pod_name = (meta.labels or {}).get(names.LABEL_POD, "")
        created = meta.creation_timestamp
        if pod_name in live or created is None or now - created < ORPHAN_AFTER:
            continue  # its pod may not have read it yet, or may be about to be made
        if cluster.delete_secret(meta.name):
            log.info("deleted credential Secret %s (pod %s)", meta.name, pod_name)
    return deleted
