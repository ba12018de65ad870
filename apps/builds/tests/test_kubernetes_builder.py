"""The kubernetes builder against a double of the Kubernetes API and the registry.

**What is the double** (``k8s_double``): the API server and the registry on 127.0.0.1 — their
paths, status codes and JSON, and the pods' lives (the test says when a pod starts, prints,
fails or succeeds). No cluster, kubelet, scheduler, docker daemon, repo2docker or registry
is involved: none can be reached from here.

**What is real**: the builder's code, the kubernetes client library (``CoreV1Api``, its
pydantic models, its serialization of the manifests and its urllib3 pool with the timeouts
the builder sets), ``requests`` for the registry, and ``kubernetes_validate``'s OpenAPI
schemas of Kubernetes 1.37 for every manifest the builder sends.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import timedelta
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client

from apps.builds.backends.base import BuildRequest, get_builder
from apps.builds.backends.kubernetes import cleaner, names, pods
from apps.builds.backends.kubernetes.builder import KubernetesBuilder
from apps.builds.backends.kubernetes.cluster import Cluster
from apps.builds.backends.kubernetes.options import BuildOptions
from apps.builds.backends.kubernetes.registry import MANIFEST_TYPES, Registry
from apps.builds.tests.k8s_double import EPOCH, NAMESPACE, KubeDouble, Script
from apps.repos.types import GitCredential, ResolvedRepo
from portal.errors import BackendError

K8S_VERSION = "1.37"  # the newest schemas kubernetes-validate 1.37 has
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "ghp_Pr1vateT0kenThatMustNeverLeak0000000"


def r2d(phase: str, message: str, **extra: Any) -> str:
    """One line of repo2docker's --json-logs output."""
    return json.dumps({"message": message, "phase": phase, **extra})


def make_repo(name: str = "org/repo", *, private: bool = False) -> ResolvedRepo:
    return ResolvedRepo(
        provider="gh",
        spec=f"{name}/HEAD",
        kind="git",
        repo_url=f"https://github.com/{name}",
        unresolved_ref="HEAD",
        resolved_ref=COMMIT,
        persistent_spec=f"gh/{name}/{COMMIT}",
        ref_url=f"https://github.com/{name}/tree/{COMMIT}",
        host="github.com",
        display_name=name,
        credential_id=7 if private else None,
    )


class Sink:
    """A LogSink that keeps every line (thread-safe)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, line: str, *, phase: str = "building", stream: str = "stdout") -> None:
        with self._lock:
            self.lines.append((line, phase, stream))

    @property
    def texts(self) -> list[str]:
        return [line for line, _, _ in self.lines]


@pytest.fixture
def double():
    server = KubeDouble()
    yield server
    server.close()


def make_options(double: KubeDouble, **overrides: Any) -> BuildOptions:
    values: dict[str, Any] = {
        "namespace": NAMESPACE,
        "build_image": "quay.io/jupyterhub/repo2docker:2024.07.0",
        "registry_prefix": f"127.0.0.1:{double.port}/bindery/",
        "push_secret": "bindery-registry-push",
        "node_selector": {"bindery.io/node-purpose": "build"},
        "tolerations": [
            {
                "key": "bindery.io/dedicated",
                "operator": "Equal",
                "value": "build",
                "effect": "NoSchedule",
            }
        ],
        "cpu_request": "500m",
        "cpu_limit": "2",
        "memory_request": "1Gi",
        "memory_limit": "4Gi",
        "api_timeout": 2.0,
        "build_timeout": 20.0,
        "pending_timeout": 10.0,
    }
    values.update(overrides)
    return BuildOptions(**values)


def make_builder(double: KubeDouble, **overrides: Any) -> KubernetesBuilder:
    options = make_options(double, **overrides)
    api = client.CoreV1Api(client.ApiClient(client.Configuration(host=double.url)))
    registry = Registry(
        url=double.url,
        username="puller",
        password="pull-secret-value",
        timeout=options.api_timeout,
    )
    return KubernetesBuilder(
        api=api, registry=registry, options=options, poll_every=0.02, log_read_timeout=2.0
    )


def request(repo: ResolvedRepo | None = None, **kwargs: Any) -> BuildRequest:
    return BuildRequest(build_id=1, repo=repo or make_repo(), **kwargs)


def key_and_names(builder: KubernetesBuilder, repo: ResolvedRepo) -> tuple[str, str, str]:
    key = names.environment_key(repo, builder.options.build_image)
    image = names.image_name(builder.options.registry_prefix, repo, key)
    return key, image, names.pod_name(repo, key)


def in_registry(double: KubeDouble, image: str) -> None:
    _, repository, tag = names.split_image(image)
    double.images.add(f"{repository}:{tag}")


def validate(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


# --- must show ------------------------------------------------------------------------------


def test_two_builds_of_one_repository_at_once_make_one_pod(double):
    """Double: the pod waits (Script end=None) until both builds have POSTed, one answered
    201, the other 409 AlreadyExists; then the test finishes it. Real: both builders, their
    threads, the client's 409 handling and both log followers."""
    builder = make_builder(double)
    repo = make_repo()
    _, image, name = key_and_names(builder, repo)
    double.script = Script(lines=[r2d("building", "Step 1/3 : FROM buildpack-deps\n")], end=None)
    results: list[Any] = [None, None]
    sinks = [Sink(), Sink()]

    def run(i: int) -> None:
        try:
            results[i] = builder.build(request(repo), sinks[i])
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    double.wait_for(
        lambda: sum(r.method == "POST" and r.path.endswith("/pods") for r in double.requests) == 2
    )
    double.wait_for(lambda: double.count("GET", f"/pods/{name}/log") >= 2)
    double.add_log(name, r2d("pushing", "Successfully pushed\n"))
    double.finish(name, "Succeeded")
    for thread in threads:
        thread.join(timeout=10)

    assert double.pods_created == 1
    assert [type(r).__name__ for r in results] == ["BuildResult", "BuildResult"]
    assert {r.environment_path for r in results} == {image}
    for sink in sinks:  # the build that joined follows the same pod's log
        assert "Step 1/3 : FROM buildpack-deps" in sink.texts
        assert "Successfully pushed" in sink.texts
    joined = [s for s in sinks if any("started by another build" in t for t in s.texts)]
    assert len(joined) == 1


def test_an_image_already_in_the_registry_makes_no_pod(double):
    """Double: the registry's manifest HEAD answers 200. Real: the builder's registry client."""
    builder = make_builder(double)
    repo = make_repo()
    _, image, _ = key_and_names(builder, repo)
    in_registry(double, image)

    result = builder.build(request(repo), Sink())

    assert result.reused is True
    assert result.environment_path == image
    assert double.count("POST", "/pods") == 0 and double.count("POST", "/secrets") == 0
    (head,) = double.made("HEAD", "")
    assert head.path == f"/v2/bindery/{repo.slug}/manifests/{image.rsplit(':', 1)[1]}"
    for media_type in MANIFEST_TYPES:  # manifest lists and OCI indexes count as the image
        assert media_type in head.headers["accept"]


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_the_registry_is_asked_through_its_auth_challenge(auth):
    """Double: 401 with WWW-Authenticate (a Bearer token service checking basic auth, or
    Basic). Real: the builder's registry client answering the challenge."""
    double = KubeDouble(registry_auth=auth)
    try:
        builder = make_builder(double)
        repo = make_repo()
        _, image, _ = key_and_names(builder, repo)
        in_registry(double, image)

        assert builder.build(request(repo), Sink()).reused is True
        heads = double.made("HEAD", "")
        assert len(heads) == 2 and "authorization" not in heads[0].headers
        if auth == "bearer":
            (token_request,) = double.made("GET", "/token")
            assert token_request.query["scope"] == [f"repository:bindery/{repo.slug}:pull"]
            assert token_request.query["service"] == ["double-registry"]
            assert heads[1].headers["authorization"].startswith("Bearer token-")
        else:
            assert heads[1].headers["authorization"].startswith("Basic ")
        assert double.count("POST", "/pods") == 0
    finally:
        double.close()


def test_a_failing_build_pod_fails_the_build_with_its_message(double):
    """Double: the pod prints repo2docker's failure and ends Failed (exit 1). Real: the
    builder reading the phase, the log and the container's state."""
    builder = make_builder(double)
    double.script = Script(
        lines=[
            r2d("building", "Step 4/9 : RUN pip install -r requirements.txt\n"),
            r2d("building", "ERROR: No matching distribution found for nosuchpkg==9\n"),
            r2d("failed", "The command '/bin/sh -c pip install' returned a non-zero code: 1\n"),
        ],
        end="Failed",
        exit_code=1,
    )
    sink = Sink()

    with pytest.raises(BackendError) as caught:
        builder.build(request(), sink)

    assert caught.value.permanent is True
    assert caught.value.code == "BUILD_FAILED"
    assert "returned a non-zero code: 1" in caught.value.message
    assert ("ERROR: No matching distribution found for nosuchpkg==9", "building", "stdout") in (
        sink.lines
    )


def test_a_failed_pod_without_a_failure_line_fails_with_the_containers_reason(double):
    builder = make_builder(double)
    double.script = Script(lines=[], end="Failed", exit_code=137, reason="OOMKilled")

    with pytest.raises(BackendError) as caught:
        builder.build(request(), Sink())

    assert caught.value.code == "BUILD_FAILED"
    assert "OOMKilled (exit code 137)" in caught.value.message


def test_a_private_repositorys_token_is_in_its_secret_only(double):
    """Double: records every request. Real: the manifests the client serialized and sent.
    The token is in one place: the body that created the credential Secret; the pod names
    that Secret by secretKeyRef; the Secret is owned by the pod and deleted once the pod's
    container has started."""
    builder = make_builder(double)
    repo = make_repo("lab/secret", private=True)
    credential = GitCredential(host="github.com", token=TOKEN)
    double.script = Script(lines=[r2d("fetching", "Picked Git content provider.\n")])
    sink = Sink()

    result = builder.build(request(repo, credentials=(credential,)), sink)

    assert result.reused is False
    secrets_posted = double.made("POST", "/secrets")
    (secret_post,) = secrets_posted
    variants = {TOKEN, base64.b64encode(TOKEN.encode()).decode()}
    for recorded in double.requests:
        if recorded is not secret_post:
            assert not any(v in recorded.text for v in variants), recorded.path
    assert not any(v in line for v in variants for line in sink.texts)

    secret = secret_post.json()
    secret_name = secret["metadata"]["name"]
    assert secret["stringData"] == {"credential": f"username=x-access-token\npassword={TOKEN}\n"}
    (pod_post,) = double.made("POST", "/pods")
    pod = pod_post.json()
    container = pod["spec"]["containers"][0]
    assert not any(TOKEN in arg for arg in container["args"])
    env = {e["name"]: e for e in container["env"]}
    assert env["GIT_CREDENTIAL_ENV"] == {
        "name": "GIT_CREDENTIAL_ENV",
        "valueFrom": {"secretKeyRef": {"name": secret_name, "key": "credential"}},
    }
    # git asks the helper for this host only (the image's system-wide helper is cleared)
    assert env["GIT_CONFIG_KEY_1"]["value"] == "credential.https://github.com.helper"
    (patch,) = double.made("PATCH", f"/secrets/{secret_name}")
    assert patch.json()["metadata"]["ownerReferences"][0]["name"] == pod["metadata"]["name"]
    assert double.made("DELETE", f"/secrets/{secret_name}")
    assert secret_name not in double.secrets

    # What was sent is what the builder made (the client's models dropped nothing), and it
    # is valid for the API server.
    _, image, name = key_and_names(builder, repo)
    key = names.environment_key(repo, builder.options.build_image)
    assert pod == pods.build_pod(
        builder.options, name=name, key=key, repo=repo, image=image, credential_secret=secret_name
    )
    validate(pod)
    validate(secret)


def test_repo2docker_json_phases_become_build_log_lines(double):
    """Double: the pod's log lines (with kubelet timestamps). Real: the follower reading the
    chunked stream through the client, and the mapping of repo2docker's JSON."""
    builder = make_builder(double)
    double.script = Script(
        lines=[
            r2d("fetching", "Picked Git content provider.\n"),
            r2d("fetching", "Cloning into '/tmp/repo2docker'...\n"),
            r2d("building", "Step 1/2 : FROM ubuntu\n ---> 1a2b3c\n"),
            json.dumps({"phase": "pushing", "progress": {"layer": "Pushing"}}),  # no message
            r2d("pushing", "Successfully pushed image\n"),
            "Traceback (most recent call last):",  # not JSON: kept as it is
            r2d("building", "an error", levelname="ERROR"),
        ]
    )
    sink = Sink()

    builder.build(request(), sink)

    followed = [line for line in sink.lines if line[1] in ("fetching", "building")]
    assert followed[-7:] == [
        ("Picked Git content provider.", "fetching", "stdout"),
        ("Cloning into '/tmp/repo2docker'...", "fetching", "stdout"),
        ("Step 1/2 : FROM ubuntu", "building", "stdout"),
        (" ---> 1a2b3c", "building", "stdout"),
        ("Successfully pushed image", "building", "stdout"),
        ("Traceback (most recent call last):", "building", "stdout"),
        ("an error", "building", "stderr"),
    ]
    assert sink.lines[0][1] == "fetching"  # "Looking for … in the registry"
    assert sink.lines[-1][1] == "built"


def test_a_log_stream_broken_off_is_read_again_without_repeating_lines(double):
    """Double: the first stream breaks off after two lines (no last chunk); the next one
    replays the log from the start, timestamps included, two lines sharing one. Real: the
    follower's reconnect and its skipping by timestamp."""
    builder = make_builder(double)
    repo = make_repo()
    _, _, name = key_and_names(builder, repo)
    double.script = Script(lines=["one", "two", "three"], end=None, cut_after=2)
    sink = Sink()
    thread = threading.Thread(target=lambda: builder.build(request(repo), sink))
    thread.start()
    double.wait_for(lambda: double.count("GET", f"/pods/{name}/log") >= 2)
    double.add_log(name, "four", "five", same_stamp=True)
    double.finish(name)
    thread.join(timeout=10)

    assert [t for t, phase, _ in sink.lines if phase == "building"] == [
        "one",
        "two",
        "three",
        "four",
        "five",
    ]


def test_a_pod_pending_too_long_fails_with_the_schedulers_message(double):
    """Double: the pod stays Pending with PodScheduled=False (Unschedulable). Real: the
    builder's pending clock, its message and the delete by uid."""
    builder = make_builder(double, pending_timeout=0.3)
    repo = make_repo()
    _, _, name = key_and_names(builder, repo)
    message = "0/3 nodes are available: 3 Insufficient memory."
    double.script = Script(start=False, pending=("condition", "Unschedulable", message))
    sink = Sink()

    with pytest.raises(BackendError) as caught:
        builder.build(request(repo), sink)

    assert caught.value.code == "BUILD_POD_PENDING" and caught.value.permanent
    assert message in caught.value.message
    assert (f"Waiting for the build pod: Unschedulable: {message}", "waiting", "stdout") in (
        sink.lines
    )
    (delete,) = double.made("DELETE", f"/pods/{name}")
    assert delete.json()["preconditions"]["uid"]
    assert name not in double.pods


def test_an_image_pull_error_fails_with_the_kubelets_message(double):
    builder = make_builder(double, pending_timeout=0.3)
    pull = 'Back-off pulling image "quay.io/jupyterhub/repo2docker:2024.07.0"'
    double.script = Script(start=False, pending=("container", "ImagePullBackOff", pull))

    with pytest.raises(BackendError) as caught:
        builder.build(request(), Sink())

    assert caught.value.code == "BUILD_POD_PENDING"
    assert f"ImagePullBackOff: {pull}" in caught.value.message


def test_the_cleaner_deletes_finished_pods_only(double):
    """Double: pods and Secrets seeded with their times. Real: the cleaner, listing by label
    selector through the client and deleting by uid. Kept: a pod finished within the TTL,
    running and pending ones, another application's pod; deleted: finished pods past the
    TTL, a pod older than any build could wait for (its worker is gone), old credential
    Secrets of pods that finished or are gone."""
    options = make_options(double, pod_ttl=3600, build_timeout=1200, pending_timeout=300)
    now = EPOCH + timedelta(days=3)
    repo = make_repo()

    def seed(
        name: str,
        phase: str,
        age: timedelta,
        *,
        finished: timedelta | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        manifest = pods.build_pod(options, name=name, key="k" * 32, repo=repo, image="i:t")
        if labels is not None:
            manifest["metadata"]["labels"] = labels
        double.seed_pod(
            manifest,
            phase=phase,
            created_at=now - age,
            finished_at=now - finished if finished else None,
        )

    hours = timedelta(hours=1)
    seed("build-old-ok", "Succeeded", 3 * hours, finished=2 * hours)
    seed("build-old-failed", "Failed", 3 * hours, finished=2 * hours)
    seed("build-recent-ok", "Succeeded", hours, finished=timedelta(minutes=5))
    seed("build-running", "Running", timedelta(minutes=30))
    seed("build-pending", "Pending", timedelta(minutes=30))
    seed("build-abandoned", "Running", timedelta(days=2))
    seed("someone-elses", "Succeeded", 3 * hours, finished=2 * hours, labels={"app": "other"})
    credential = GitCredential(host="github.com", token="t" * 20)
    for secret, pod_name, age in [
        ("old-of-finished", "build-old-ok", 2 * hours),
        ("old-of-gone", "build-gone", 2 * hours),
        ("old-of-running", "build-running", 2 * hours),
        ("young-of-gone", "build-not-yet", timedelta(minutes=1)),
    ]:
        manifest = pods.credential_secret(secret, pod=pod_name, key="k" * 32, credential=credential)
        double.seed_secret(manifest, created_at=now - age)
    cluster = Cluster(
        client.CoreV1Api(client.ApiClient(client.Configuration(host=double.url))), NAMESPACE, 2.0
    )

    deleted = cleaner.clean_build_pods(cluster, options, now=now)

    assert sorted(deleted) == ["build-abandoned", "build-old-failed", "build-old-ok"]
    assert sorted(double.pods) == [
        "build-pending",
        "build-recent-ok",
        "build-running",
        "someone-elses",
    ]
    assert sorted(double.secrets) == ["old-of-running", "young-of-gone"]
    assert cleaner.clean_build_pods(cluster, options, now=now) == []  # safe to run twice


@pytest.mark.parametrize(
    "endpoint",
    ["registry", "token", "create_secret", "create_pod", "read_pod"],
)
def test_a_stalled_endpoint_fails_the_build_instead_of_hanging(endpoint):
    """Double: the endpoint accepts the request and never answers. Real: the timeouts the
    builder gives the kubernetes client and requests; the build ends with a transient
    BackendError (the task retries it) within a few timeouts, not never."""
    double = KubeDouble(registry_auth="bearer" if endpoint == "token" else None)
    try:
        builder = make_builder(double, api_timeout=0.3)
        double.script = Script(end=None)
        double.stall(endpoint)
        repo = make_repo("lab/secret", private=True)
        credential = GitCredential(host="github.com", token=TOKEN)
        began = time.monotonic()

        with pytest.raises(BackendError) as caught:
            builder.build(request(repo, credentials=(credential,)), Sink())

        assert time.monotonic() - began < 5  # urllib3 retries a GET up to 3 times
        assert caught.value.permanent is False
        assert caught.value.code in ("K8S_UNAVAILABLE", "REGISTRY_UNAVAILABLE")
    finally:
        double.close()


def test_a_stalled_log_is_read_again_after_its_read_timeout(double):
    """Double: the first log request never answers; the second streams. Real: the log's
    read timeout (the follower gives up on it and opens the log again)."""
    builder = make_builder(double)
    builder.log_read_timeout = 0.2
    double.stall("log", times=4)  # urllib3 tries a GET four times
    double.script = Script(lines=["after the stall"])
    sink = Sink()

    builder.build(request(), sink)

    assert "after the stall" in sink.texts
    assert double.count("GET", "/log") >= 5


def test_a_build_past_its_deadline_stops_and_deletes_its_pod(double):
    builder = make_builder(double, build_timeout=0.5)
    repo = make_repo()
    _, _, name = key_and_names(builder, repo)
    double.script = Script(lines=["working"], end=None)

    with pytest.raises(BackendError) as caught:
        builder.build(request(repo), Sink())

    assert caught.value.code == "BUILD_TIMEOUT"
    assert name not in double.pods


def test_cancelling_deletes_the_pod_this_build_made(double):
    builder = make_builder(double)
    repo = make_repo()
    _, _, name = key_and_names(builder, repo)
    double.script = Script(end=None)
    build = request(repo)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            builder.build(build, Sink())
        except BackendError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    double.wait_for(lambda: double.count("GET", f"/pods/{name}/log") >= 1)
    build.cancel.set()
    thread.join(timeout=10)

    assert [getattr(e, "code", None) for e in outcome] == ["BUILD_CANCELLED"]
    assert name not in double.pods


def test_a_finished_pod_of_an_earlier_build_is_replaced(double):
    """Double: a Failed pod of that name is there (409 on create). Real: the builder deleting
    exactly that pod (its uid as precondition) and making its own."""
    builder = make_builder(double)
    repo = make_repo()
    key, image, name = key_and_names(builder, repo)
    old = double.seed_pod(
        pods.build_pod(builder.options, name=name, key=key, repo=repo, image=image),
        phase="Failed",
        created_at=EPOCH,
    )
    double.script = Script(lines=[r2d("building", "again\n")])

    result = builder.build(request(repo), Sink())

    assert result.environment_path == image
    (delete,) = double.made("DELETE", f"/pods/{name}")
    assert delete.json()["preconditions"] == {"uid": old.uid}
    assert double.pods_created == 1 and double.pods[name].uid != old.uid


def test_get_builder_reaches_the_cluster_through_the_kubeconfig(double, settings, tmp_path):
    """Real: BINDERY_BACKEND=kubernetes, the settings, get_builder() and the client's own
    kubeconfig loader, pointed at the double."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "double",
                "clusters": [{"name": "double", "cluster": {"server": double.url}}],
                "users": [{"name": "worker", "user": {"token": "service-account-token"}}],
                "contexts": [
                    {"name": "double", "context": {"cluster": "double", "user": "worker"}}
                ],
            }
        )
    )
    settings.BINDERY_BACKEND = "kubernetes"
    settings.BINDERY_K8S_KUBECONFIG = str(kubeconfig)
    settings.BINDERY_K8S_NAMESPACE = NAMESPACE
    settings.BINDERY_REGISTRY_PREFIX = f"127.0.0.1:{double.port}/bindery/"
    settings.BINDERY_REGISTRY_URL = double.url
    double.script = Script(lines=[r2d("building", "built\n")])

    builder = get_builder()
    result = builder.build(request(), Sink())

    assert isinstance(builder, KubernetesBuilder)
    (post,) = double.made("POST", f"/namespaces/{NAMESPACE}/pods")
    assert post.headers["authorization"] == "Bearer service-account-token"
    assert builder.environment_exists(result) is False  # the double's registry got no push
    in_registry(double, result.environment_path)
    assert builder.environment_exists(result) is True


def test_environment_exists_says_true_when_the_registry_cannot_say(double):
    builder = make_builder(double, api_timeout=0.3)
    result = builder._result(
        "k" * 32, f"127.0.0.1:{double.port}/bindery/x:k", reused=True, durations={}
    )
    double.stall("registry")
    assert builder.environment_exists(result) is True


def test_names_are_dns_safe_deterministic_and_valid_images():
    long = make_repo("a-very-long-organisation-name/" + "and-a-repository-name-" * 5)
    key = names.environment_key(long, "quay.io/jupyterhub/repo2docker:2024.07.0")
    pod = names.pod_name(long, key)
    assert len(pod) <= 63 and names.is_dns_label(pod) and pod.startswith("build-")
    assert pod == names.pod_name(long, key)
    assert names.is_valid_image(names.image_name("registry.example.org:5000/bindery/", long, key))
    other = names.environment_key(long, "quay.io/jupyterhub/repo2docker:2025.01.0")
    assert other != key  # a new repo2docker image builds every repository again


def test_every_manifest_the_builder_makes_is_valid_for_kubernetes(double):
    """Real: the OpenAPI schemas (strict: no unknown field) for the pod with every option
    set, without any, and the credential Secret."""
    repo = make_repo()
    full = make_options(double)
    bare = BuildOptions(
        registry_prefix="registry.example.org/bindery/",
        push_secret="",
        cpu_request="",
        cpu_limit="",
        memory_request="",
        memory_limit="",
    )
    for options, secret in ((full, "build-org-repo-git-1234"), (bare, None)):
        key = names.environment_key(repo, options.build_image)
        manifest = pods.build_pod(
            options,
            name=names.pod_name(repo, key),
            key=key,
            repo=repo,
            image=names.image_name(options.registry_prefix, repo, key),
            credential_secret=secret,
        )
        validate(manifest)
        assert manifest["spec"]["automountServiceAccountToken"] is False
        assert_least_privilege(manifest)
    args = pods.build_pod(full, name="p", key="k", repo=repo, image="i:t")["spec"]["containers"][0][
        "args"
    ]
    assert args[-1] == repo.repo_url and "--build-memory-limit" in args
    assert args[args.index("--build-memory-limit") + 1] == str(4 * 2**30)
    credential = GitCredential(host="github.com", token=TOKEN)
    validate(pods.credential_secret("s", pod="p", key="k", credential=credential))


def assert_least_privilege(pod: dict[str, Any]) -> None:
    """repo2docker needs the docker socket, nothing more: no capability, no escalation, the
    runtime's seccomp profile; uid 0 only as the socket's owner (pods.CONTAINER_SECURITY)."""
    spec = pod["spec"]
    assert not any(spec.get(f) for f in ("hostNetwork", "hostPID", "hostIPC"))
    [container] = spec["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["runAsUser"] == 0
    [socket_volume] = [v for v in spec["volumes"] if "hostPath" in v]
    assert socket_volume["hostPath"]["type"] == "Socket"  # the one host path: the socket


def test_the_build_pod_the_api_gets_drops_every_privilege(double):
    """Real: the pod as the client serialized it and the double received it."""
    double.script = Script(lines=["done"])
    make_builder(double).build(request(), Sink())
    (post,) = double.made("POST", f"/namespaces/{NAMESPACE}/pods")
    pod = post.json()
    validate(pod)
    assert_least_privilege(pod)


@pytest.mark.parametrize(("endpoint", "left"), [("patch_secret", 0), ("delete_secret", 1)])
def test_a_stalled_secret_patch_or_delete_does_not_hold_up_the_build(endpoint, left):
    """Double: the Secret's PATCH (owner) or DELETE never answers. Real: the builder giving
    up on it after its timeout and finishing the build; a Secret it could not delete is the
    garbage collector's (owned by the pod) or the cleaner's."""
    double = KubeDouble()
    try:
        builder = make_builder(double, api_timeout=0.3)
        double.stall(endpoint)
        double.script = Script(lines=["done"])
        credential = GitCredential(host="github.com", token=TOKEN)

        result = builder.build(request(make_repo(private=True), credentials=(credential,)), Sink())

        assert result.reused is False
        assert len(double.secrets) == left
    finally:
        double.close()


def test_the_cleaner_fails_clearly_when_the_api_stalls(double):
    double.stall("list_pods")
    cluster = Cluster(
        client.CoreV1Api(client.ApiClient(client.Configuration(host=double.url))), NAMESPACE, 0.3
    )
    with pytest.raises(BackendError) as caught:
        cleaner.clean_build_pods(cluster, make_options(double))
    assert caught.value.code == "K8S_UNAVAILABLE" and not caught.value.permanent


@pytest.mark.django_db(transaction=True)  # the build's log and watcher threads use the rows
def test_execute_build_on_kubernetes_makes_the_build_ready_with_its_image(
    double, settings, tmp_path
):
    """Real: the build service (claim, BuildLog with redaction, the result on the row) with
    the kubernetes builder from the settings; the double as the cluster and registry."""
    from apps.builds import services
    from apps.builds.models import Build, BuildLogLine

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "double",
                "clusters": [{"name": "double", "cluster": {"server": double.url}}],
                "users": [{"name": "worker", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "double", "context": {"cluster": "double", "user": "worker"}}
                ],
            }
        )
    )
    settings.BINDERY_BACKEND = "kubernetes"
    settings.BINDERY_K8S_KUBECONFIG = str(kubeconfig)
    settings.BINDERY_REGISTRY_PREFIX = f"127.0.0.1:{double.port}/bindery/"
    settings.BINDERY_REGISTRY_URL = double.url
    repo = make_repo()
    double.script = Script(lines=[r2d("building", "Step 1/1 : FROM ubuntu\n")])
    build = Build.objects.create(
        provider=repo.provider,
        spec=repo.spec,
        repo_url=repo.repo_url,
        repo_slug=repo.slug,
        display_name=repo.display_name,
        resolved_ref=repo.resolved_ref,
        resolved=services.resolved_to_json(repo),
        build_key="k8s-" + "0" * 60,
    )

    assert services.execute_build(build.pk) == Build.Status.READY

    build.refresh_from_db()
    key = names.environment_key(repo, settings.BINDERY_K8S_BUILD_IMAGE)
    assert build.result["environment_path"] == f"127.0.0.1:{double.port}/bindery/{repo.slug}:{key}"
    assert build.environment_key == key
    texts = list(BuildLogLine.objects.filter(build=build).values_list("text", flat=True))
    assert "Step 1/1 : FROM ubuntu" in texts


def test_the_beat_task_cleans_with_the_settings(double, settings, tmp_path):
    """Real: the Celery task body (run in-process), the settings and the kubeconfig."""
    from apps.builds import tasks

    assert tasks.clean_build_pods() == []  # the local backend has no build pods
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "double",
        "clusters": [{"name": "double", "cluster": {"server": double.url}}],
        "users": [{"name": "worker", "user": {"token": "t"}}],
        "contexts": [{"name": "double", "context": {"cluster": "double", "user": "worker"}}],
    }))  # fmt: skip
    settings.BINDERY_BACKEND = "kubernetes"
    settings.BINDERY_K8S_KUBECONFIG = str(kubeconfig)
    settings.BINDERY_REGISTRY_PREFIX = "registry.example.org/bindery/"
    options = make_options(double)
    manifest = pods.build_pod(options, name="build-done", key="k" * 32, repo=make_repo(),
                              image="i:t")  # fmt: skip
    double.seed_pod(manifest, phase="Succeeded", created_at=EPOCH)  # long before now

    assert tasks.clean_build_pods() == ["build-done"]
    assert double.pods == {}


@pytest.mark.django_db(transaction=True)  # the build's log and watcher threads use the rows
def test_a_misconfigured_backend_fails_the_build_with_its_code(settings, tmp_path):
    """Real: request_build over a ready build of the same key (web asks the builder whether
    its image is still there) and execute_build, with BINDERY_BACKEND=kubernetes and a
    kubeconfig that does not exist. No double: nothing is contacted. The request does not
    raise; the build it makes fails with K8S_MISCONFIGURED and the builder's sentence."""
    from apps.accounts.tests.factories import UserFactory
    from apps.builds import services
    from apps.builds.models import Build

    settings.BINDERY_BACKEND = "kubernetes"
    settings.BINDERY_K8S_KUBECONFIG = str(tmp_path / "no-such-kubeconfig")
    settings.BINDERY_REGISTRY_PREFIX = "registry.example.org/bindery/"
    repo = make_repo()
    image = f"registry.example.org/bindery/{repo.slug}:{'0' * 32}"
    ready = Build.objects.create(
        provider=repo.provider, spec=repo.spec, repo_url=repo.repo_url, repo_slug=repo.slug,
        display_name=repo.display_name, resolved_ref=repo.resolved_ref,
        resolved=services.resolved_to_json(repo), build_key=services.build_key_for(repo, ""),
        status=Build.Status.READY,
        result={"environment_key": "0" * 32, "environment_path": image, "checkout_path": "",
                "python_version": "", "config_files": [], "packages": []},
    )  # fmt: skip

    requested = services.request_build(repo, UserFactory())

    assert requested.created and requested.build.pk != ready.pk
    assert services.execute_build(requested.build.pk) == Build.Status.FAILED
    failed = Build.objects.get(pk=requested.build.pk)
    assert failed.error_code == "K8S_MISCONFIGURED"
    assert "no-such-kubeconfig" in failed.error_message
    assert Build.objects.get(pk=ready.pk).status == Build.Status.READY  # kept as it was
