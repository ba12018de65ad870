"""A stand-in for a Kubernetes API server and a Docker registry, on 127.0.0.1.

No cluster and no registry can be reached from the test machine, so this double answers in
their place. **It is the double**: the HTTP paths, query parameters, status codes and JSON
shapes the builder relies on, copied from the Kubernetes API (core/v1) and the Docker
Registry HTTP API v2:

- ``POST /api/v1/namespaces/{ns}/pods`` → 201 with the pod (uid, creationTimestamp, status
  Pending), or 409 with a real ``Status`` (reason AlreadyExists) when the name is taken;
- ``GET /api/v1/namespaces/{ns}/pods/{name}`` → 200 / 404 ``Status`` (NotFound);
- ``GET /api/v1/namespaces/{ns}/pods?labelSelector=a=b,c=d`` → a ``PodList``;
- ``GET .../pods/{name}/log?container=&follow=true&timestamps=true`` → 400 while the container
  is waiting to start, else a chunked stream of the pod's lines (each with an RFC 3339
  timestamp when asked) that ends when the double's pod finishes;
- ``DELETE .../pods/{name}`` with ``DeleteOptions`` (``preconditions.uid`` honoured: 409
  Conflict when it does not match) → 200 / 404;
- ``POST``, ``PATCH``, ``DELETE``, ``GET`` (list) ``/api/v1/namespaces/{ns}/secrets``
  (``stringData`` stored as base64 ``data``, as the API server does);
- ``HEAD /v2/<name>/manifests/<tag>`` → 200 / 404; with ``auth="bearer"`` a 401 with
  ``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` until a token from
  ``GET /token`` (basic auth checked) is presented; with ``auth="basic"`` a 401 ``Basic``.

What it does **not** do: scheduling, kubelets, containers, watches, garbage collection of
owned objects, resourceVersion conflicts, admission. A pod's life is driven by the test
(:class:`Script`, :meth:`KubeDouble.finish`). Everything on the other side is real: the
kubernetes client library (its models, serialization, urllib3 pool, timeouts), ``requests``
for the registry, and the builder's code.

The double records every request (:attr:`KubeDouble.requests`) and never sleeps: tests wait
on its condition (:meth:`KubeDouble.wait_for`), and a stalled endpoint waits on an event.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

NAMESPACE = "bindery"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_nano(moment: datetime, nanos: int) -> str:
    """As Go's RFC3339Nano (the kubelet's log timestamps): trailing zeros of the fraction
    dropped."""
    fraction = f"{nanos:09d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        """Everything the request carried, for "is this string anywhere" assertions."""
        return (
            " ".join([self.method, self.path, json.dumps(self.query), json.dumps(self.headers)])
            + " "
            + self.body.decode(errors="replace")
        )


@dataclass
class Script:
    """What a created pod does (the double's kubelet)."""

    start: bool = True  # leave Pending at once (container running)
    lines: list[str] = field(default_factory=list)  # printed once running
    end: str | None = "Succeeded"  # finish at once after the lines (None: the test finishes it)
    exit_code: int = 0
    reason: str = ""  # the terminated container's reason (default Completed / Error)
    message: str = ""  # the terminated container's message
    # While Pending: ("condition", reason, message) for PodScheduled=False, or
    # ("container", reason, message) for the container's waiting state.
    pending: tuple[str, str, str] | None = None
    cut_after: int | None = None  # the first log stream breaks off after this many lines


@dataclass
class Pod:
    name: str
    manifest: dict[str, Any]
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: datetime = EPOCH
    phase: str = "Pending"
    running: bool = False
    finished_at: datetime | None = None
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    pending: tuple[str, str, str] | None = None
    log: list[tuple[str, str]] = field(default_factory=list)  # (timestamp, text)
    cut_after: int | None = None
    deleted: bool = False

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def _status(code: int, reason: str, message: str, name: str = "", kind: str = "") -> dict:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if name:
        body["details"] = {"name": name, "kind": kind}
    return body


class KubeDouble:
    """The double's state and its HTTP server (see the module docstring)."""

    def __init__(
        self,
        *,
        registry_auth: str | None = None,
        registry_user: str = "puller",
        registry_password: str = "pull-secret-value",
    ) -> None:
        self.cond = threading.Condition()
        self.pods: dict[str, Pod] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.pods_created = 0  # POSTs that created a pod (201)
        self.images: set[str] = set()  # "repository:tag" in the registry
        self.registry_auth = registry_auth
        self.registry_user, self.registry_password = registry_user, registry_password
        self.tokens: set[str] = set()
        self.script = Script()
        self.stalls: dict[str, int | None] = {}  # endpoint → requests left to stall (None: all)
        self.release = threading.Event()  # set at close: stalled requests end
        self.closing = False
        self._clock = itertools.count(1)
        self._rv = itertools.count(1)
        double = self

        class Handler(_Handler):
            pass

        Handler.double = double
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # serve_forever checks for shutdown this often: close() returns within it
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    # -- what tests drive and read ---------------------------------------------------------

    def stall(self, endpoint: str, times: int | None = None) -> None:
        """The next ``times`` requests (None: all) to ``endpoint`` get no answer until the
        double closes. Endpoints: registry, token, create_pod, read_pod, list_pods, log,
        delete_pod, create_secret, patch_secret, delete_secret, list_secrets."""
        with self.cond:
            self.stalls[endpoint] = times

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait (on the double's condition, notified at every request and change) until
        ``predicate()`` holds. Raises AssertionError after ``timeout`` seconds."""
        with self.cond:
            if not self.cond.wait_for(predicate, timeout=timeout):
                raise AssertionError("the double never got there")

    def count(self, method: str, suffix: str) -> int:
        with self.cond:
            return sum(1 for r in self.requests if r.method == method and r.path.endswith(suffix))

    def made(self, method: str, suffix: str) -> list[Recorded]:
        with self.cond:
            return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    def _stamp(self) -> str:
        tick = next(self._clock)
        return rfc3339_nano(EPOCH + timedelta(seconds=tick // 1000), (tick % 1000) * 1_000_000)

    def add_log(self, name: str, *lines: str, same_stamp: bool = False) -> None:
        """Print ``lines`` in the pod ``name`` (``same_stamp``: read at once by the kubelet)."""
        with self.cond:
            pod = self.pods[name]
            stamp = self._stamp()
            for line in lines:
                pod.log.append((stamp, line))
                if not same_stamp:
                    stamp = self._stamp()
            self.cond.notify_all()

    def start(self, name: str) -> None:
        with self.cond:
            pod = self.pods[name]
            pod.running, pod.phase, pod.pending = True, "Running", None
            self.cond.notify_all()

    def finish(
        self,
        name: str,
        phase: str = "Succeeded",
        *,
        exit_code: int | None = None,
        reason: str = "",
        message: str = "",
    ) -> None:
        with self.cond:
            pod = self.pods[name]
            pod.phase, pod.running = phase, False
            pod.exit_code = (
                exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
            )
            pod.reason = reason or ("Completed" if phase == "Succeeded" else "Error")
            pod.message = message
            pod.finished_at = EPOCH + timedelta(minutes=1)
            self.cond.notify_all()

    def seed_pod(
        self,
        manifest: dict[str, Any],
        *,
        phase: str,
        created_at: datetime,
        finished_at: datetime | None = None,
    ) -> Pod:
        """A pod that was there before the test (not counted in ``pods_created``)."""
        with self.cond:
            pod = Pod(manifest["metadata"]["name"], copy.deepcopy(manifest), created_at=created_at)
            pod.phase, pod.running = phase, phase == "Running"
            if pod.finished:
                pod.finished_at = finished_at or created_at
                pod.exit_code = 0 if phase == "Succeeded" else 1
                pod.reason = "Completed" if phase == "Succeeded" else "Error"
            self.pods[pod.name] = pod
            return pod

    def seed_secret(self, manifest: dict[str, Any], *, created_at: datetime) -> None:
        with self.cond:
            self.secrets[manifest["metadata"]["name"]] = self._stored_secret(manifest, created_at)

    # -- the API's behaviour ---------------------------------------------------------------

    def _run_script(self, pod: Pod) -> None:
        script = self.script
        pod.pending, pod.cut_after = script.pending, script.cut_after
        if not script.start:
            return
        pod.running, pod.phase = True, "Running"
        stamp = None
        for line in script.lines:
            stamp = self._stamp()
            pod.log.append((stamp, line))
        if script.end is not None:
            pod.phase, pod.running = script.end, False
            pod.exit_code = script.exit_code
            pod.reason = script.reason or ("Completed" if script.end == "Succeeded" else "Error")
            pod.message = script.message
            pod.finished_at = EPOCH + timedelta(minutes=1)

    def pod_json(self, pod: Pod) -> dict[str, Any]:
        body = copy.deepcopy(pod.manifest)
        meta = body.setdefault("metadata", {})
        meta.update(
            namespace=NAMESPACE,
            uid=pod.uid,
            resourceVersion=str(next(self._rv)),
            creationTimestamp=rfc3339(pod.created_at),
        )
        status: dict[str, Any] = {"phase": pod.phase}
        container = {
            "name": "builder",
            "image": "repo2docker",
            "imageID": "",
            "ready": False,
            "restartCount": 0,
        }
        if pod.running:
            status["startTime"] = rfc3339(pod.created_at)
            container.update(
                ready=True, started=True, state={"running": {"startedAt": rfc3339(pod.created_at)}}
            )
            status["containerStatuses"] = [container]
        elif pod.finished:
            status["startTime"] = rfc3339(pod.created_at)
            terminated = {
                "exitCode": pod.exit_code,
                "reason": pod.reason,
                "startedAt": rfc3339(pod.created_at),
                "finishedAt": rfc3339(pod.finished_at or pod.created_at),
            }
            if pod.message:
                terminated["message"] = pod.message
            container.update(started=False, state={"terminated": terminated})
            status["containerStatuses"] = [container]
        elif pod.pending is not None:
            where, reason, message = pod.pending
            if where == "condition":
                status["conditions"] = [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": reason,
                        "message": message,
                    }
                ]
            else:
                container.update(state={"waiting": {"reason": reason, "message": message}})
                status["containerStatuses"] = [container]
        body["status"] = status
        return body

    def _stored_secret(self, manifest: dict[str, Any], created_at: datetime) -> dict[str, Any]:
        stored = copy.deepcopy(manifest)
        data = dict(stored.pop("data", {}) or {})
        for k, v in (stored.pop("stringData", {}) or {}).items():
            data[k] = base64.b64encode(v.encode()).decode()
        stored["data"] = data
        stored["metadata"].update(
            namespace=NAMESPACE, uid=str(uuid.uuid4()), creationTimestamp=rfc3339(created_at)
        )
        return stored


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    double: KubeDouble

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing --------------------------------------------------------------------------

    def _record(self) -> Recorded:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}  # names are case-blind
        record = Recorded(self.command, parts.path, parse_qs(parts.query), headers, body)
        with self.double.cond:
            self.double.requests.append(record)
            self.double.cond.notify_all()
        return record

    def _stalled(self, endpoint: str) -> bool:
        double = self.double
        with double.cond:
            if endpoint not in double.stalls:
                return False
            left = double.stalls[endpoint]
            if left is not None:
                if left <= 0:
                    return False
                double.stalls[endpoint] = left - 1
        double.release.wait()
        self.close_connection = True
        return True

    def _send(self, code: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        try:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        record = self._record()
        parts = [p for p in record.path.split("/") if p]
        try:
            if parts[:1] == ["v2"]:
                return self._registry(record, parts)
            if parts == ["token"]:
                return self._token(record)
            if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 5:
                resource, rest = parts[4], parts[5:]
                if resource == "pods":
                    return self._pods(record, rest)
                if resource == "secrets":
                    return self._secrets(record, rest)
            self._send(404, _status(404, "NotFound", f"the server could not find {record.path}"))
        except OSError:
            self.close_connection = True

    # -- registry --------------------------------------------------------------------------

    def _registry(self, record: Recorded, parts: list[str]) -> None:
        double = self.double
        if self._stalled("registry"):
            return
        if len(parts) < 4 or parts[-2] != "manifests":
            return self._send(404, {"errors": [{"code": "NAME_UNKNOWN"}]})
        name, tag = "/".join(parts[1:-2]), parts[-1]
        auth = record.headers.get("authorization", "")
        if double.registry_auth == "bearer" and auth.removeprefix("Bearer ") not in double.tokens:
            challenge = (
                f'Bearer realm="{double.url}/token",service="double-registry",'
                f'scope="repository:{name}:pull"'
            )
            return self._send(
                401, {"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": challenge}
            )
        if double.registry_auth == "basic" and auth != self._basic():
            return self._send(
                401,
                {"errors": [{"code": "UNAUTHORIZED"}]},
                {"WWW-Authenticate": 'Basic realm="double-registry"'},
            )
        if f"{name}:{tag}" in double.images:
            return self._send(
                200,
                None,
                {
                    "Content-Type": "application/vnd.oci.image.index.v1+json",
                    "Docker-Content-Digest": "sha256:" + "0" * 64,
                },
            )
        self._send(404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]})

    def _basic(self) -> str:
        pair = f"{self.double.registry_user}:{self.double.registry_password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def _token(self, record: Recorded) -> None:
        if self._stalled("token"):
            return
        if record.headers.get("authorization") != self._basic():
            return self._send(401, {"details": "incorrect username or password"})
        token = f"token-{uuid.uuid4().hex}"
        with self.double.cond:
            self.double.tokens.add(token)
        self._send(200, {"token": token, "expires_in": 300})

    # -- pods ------------------------------------------------------------------------------

    def _pods(self, record: Recorded, rest: list[str]) -> None:
        double = self.double
        if not rest and record.method == "POST":
            if self._stalled("create_pod"):
                return
            manifest = record.json()
            name = manifest["metadata"]["name"]
            with double.cond:
                if name in double.pods:
                    body = _status(
                        409, "AlreadyExists", f'pods "{name}" already exists', name, "pods"
                    )
                    return self._send(409, body)
                pod = Pod(name, manifest)
                double.pods[name] = pod
                double.pods_created += 1
                double._run_script(pod)
                body = double.pod_json(pod)
                double.cond.notify_all()
            return self._send(201, body)
        if not rest and record.method == "GET":
            if self._stalled("list_pods"):
                return
            selector = (record.query.get("labelSelector") or [""])[0]
            with double.cond:
                items = [
                    double.pod_json(p)
                    for p in double.pods.values()
                    if _matches(p.manifest["metadata"].get("labels", {}), selector)
                ]
            return self._send(
                200,
                {
                    "kind": "PodList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": "1"},
                    "items": items,
                },
            )
        name = rest[0]
        if rest[1:] == ["log"]:
            return self._log(record, name)
        if record.method == "GET":
            if self._stalled("read_pod"):
                return
            with double.cond:
                found = double.pods.get(name)
                shown = double.pod_json(found) if found else None
            if shown is None:
                return self._send(
                    404, _status(404, "NotFound", f'pods "{name}" not found', name, "pods")
                )
            return self._send(200, shown)
        if record.method == "DELETE":
            if self._stalled("delete_pod"):
                return
            options = record.json() if record.body else {}
            wanted = (options.get("preconditions") or {}).get("uid")
            with double.cond:
                gone = double.pods.get(name)
                if gone is None:
                    return self._send(
                        404, _status(404, "NotFound", f'pods "{name}" not found', name, "pods")
                    )
                if wanted and wanted != gone.uid:
                    message = (
                        f"Precondition failed: UID in precondition: {wanted}, "
                        f"UID in object meta: {gone.uid}"
                    )
                    return self._send(409, _status(409, "Conflict", message, name, "pods"))
                last = double.pod_json(gone)
                gone.deleted = True
                del double.pods[name]
                double.cond.notify_all()
            return self._send(200, last)
        self._send(405, _status(405, "MethodNotAllowed", "the server does not allow this method"))

    def _log(self, record: Recorded, name: str) -> None:
        double = self.double
        if self._stalled("log"):
            return
        stamps = (record.query.get("timestamps") or ["false"])[0] == "true"
        follow = (record.query.get("follow") or ["false"])[0] == "true"
        with double.cond:
            found = double.pods.get(name)
            if found is None:
                return self._send(
                    404, _status(404, "NotFound", f'pods "{name}" not found', name, "pods")
                )
            pod = found
            if not pod.running and not pod.finished:
                message = (
                    f'container "builder" in pod "{name}" is waiting to start: ContainerCreating'
                )
                return self._send(400, _status(400, "BadRequest", message))
            cut_after, pod.cut_after = pod.cut_after, None
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        while True:
            with double.cond:
                double.cond.wait_for(partial(self._more, pod, sent))
                lines = pod.log[sent:]  # nothing is printed after a pod finishes
                over = double.closing or pod.deleted or pod.finished
            for stamp, text in lines:
                if cut_after is not None and sent >= cut_after:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)  # broken off: no last chunk
                    return
                data = (f"{stamp} {text}\n" if stamps else f"{text}\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                sent += 1
            if over or not follow:
                break
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _more(self, pod: Pod, sent: int) -> bool:
        """Whether a log stream that sent ``sent`` lines has more to say (or is over)."""
        return self.double.closing or pod.deleted or pod.finished or len(pod.log) > sent

    # -- secrets ---------------------------------------------------------------------------

    def _secrets(self, record: Recorded, rest: list[str]) -> None:
        double = self.double
        if not rest and record.method == "POST":
            if self._stalled("create_secret"):
                return
            manifest = record.json()
            name = manifest["metadata"]["name"]
            with double.cond:
                if name in double.secrets:
                    return self._send(
                        409,
                        _status(
                            409,
                            "AlreadyExists",
                            f'secrets "{name}" already exists',
                            name,
                            "secrets",
                        ),
                    )
                stored = double._stored_secret(manifest, EPOCH)
                double.secrets[name] = stored
                double.cond.notify_all()
            return self._send(201, stored)
        if not rest and record.method == "GET":
            if self._stalled("list_secrets"):
                return
            selector = (record.query.get("labelSelector") or [""])[0]
            with double.cond:
                items = [
                    copy.deepcopy(s)
                    for s in double.secrets.values()
                    if _matches(s["metadata"].get("labels", {}), selector)
                ]
            return self._send(
                200,
                {
                    "kind": "SecretList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": "1"},
                    "items": items,
                },
            )
        name = rest[0]
        with double.cond:
            secret = double.secrets.get(name)
        if secret is None:
            return self._send(
                404, _status(404, "NotFound", f'secrets "{name}" not found', name, "secrets")
            )
        if record.method == "PATCH":
            if self._stalled("patch_secret"):
                return
            patch = record.json()
            with double.cond:
                secret["metadata"].update(patch.get("metadata", {}))
                double.cond.notify_all()
            return self._send(200, secret)
        if record.method == "DELETE":
            if self._stalled("delete_secret"):
                return
            with double.cond:
                double.secrets.pop(name, None)
                double.cond.notify_all()
            return self._send(200, _status(200, "", "", name, "secrets"))
        self._send(405, _status(405, "MethodNotAllowed", "the server does not allow this method"))
