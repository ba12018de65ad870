"""What a build's stored log may weigh, and how long it is kept.

Through ``services.execute_build`` (what the task runs), with the real log sink, database
and channel layer; the builder is a small implementation of the Builder protocol
(``BINDERY_BACKEND`` takes an import path) that prints what a test asks, in phases, as a
chatty ``postBuild`` would, so that no uv build is needed to print megabytes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from apps.builds import services
from apps.builds.backends.base import BuildRequest, BuildResult, LogSink
from apps.builds.logs import LINE_CUT, TRUNCATED, BuildLog
from apps.builds.models import Build, BuildLogLine
from portal.errors import BackendError

pytestmark = pytest.mark.django_db(transaction=True)

KIB = 1024


class ChattyBuilder:
    """Prints ``script`` (phase, line) to the sink, then fails (``fail``) or succeeds."""

    script: ClassVar[list[tuple[str, str]]] = []
    fail: ClassVar[BackendError | None] = None
    calls: ClassVar[int] = 0

    def build(self, request: BuildRequest, log: LogSink) -> BuildResult:
        type(self).calls += 1
        for phase, line in self.script:
            log(line, phase=phase)
        if self.fail is not None and type(self).calls == 1:
            raise self.fail
        return BuildResult(
            environment_key="k" * 64,
            environment_path="/nonexistent/env",
            checkout_path="/nonexistent/checkout",
            python_version="3.11.0",
            config_files=("requirements.txt",),
            packages=(),
        )

    def environment_exists(self, result: BuildResult) -> bool:
        return False

    def mark_used(self, result: BuildResult) -> None:
        pass


@pytest.fixture
def chatty(settings: Any) -> type[ChattyBuilder]:
    settings.BINDERY_BACKEND = f"{__name__}.ChattyBuilder"
    ChattyBuilder.script, ChattyBuilder.fail, ChattyBuilder.calls = [], None, 0
    return ChattyBuilder


@pytest.fixture
def new_build(alice: Any, public_repo: Any) -> Build:
    resolved, credential = services.resolve_input(alice, repo_url=public_repo.url, ref="main")
    return services.request_build(resolved, alice, credential=credential).build


def stored(build: Build) -> list[BuildLogLine]:
    return list(BuildLogLine.objects.filter(build=build).order_by("n"))


def weight(lines: list[BuildLogLine]) -> int:
    return sum(len(line.text.encode()) + 1 for line in lines)


def test_default_cap_stores_2_mib_then_one_truncation_line_and_the_build_goes_on(
    chatty: type[ChattyBuilder], new_build: Build
) -> None:
    assert django_settings.BINDERY_BUILD_LOG_MAX_BYTES == 2 * 1024 * KIB  # the default
    line = "é" * 511  # 1 KiB of UTF-8 (1022 bytes and a newline)
    chatty.script = [("fetching", "cloned")] + [("building", f"{line}{i}") for i in range(3000)]
    chatty.script += [("building", "this one is past the cap too")]
    assert services.execute_build(new_build.pk) == Build.Status.READY
    build = Build.objects.get(pk=new_build.pk)
    lines = stored(build)
    assert (build.status, build.phase) == ("ready", "built")  # phases still went on
    marker = lines[-1]
    assert marker.text == (
        "… log truncated: the build printed more than 2 MiB; the rest is not stored"
    )
    assert marker.stream == "stderr"
    assert [line.n for line in lines] == list(range(1, len(lines) + 1))
    assert build.log_size == len(lines) == marker.n  # pagers stop at the last stored line
    kept = lines[:-1]
    assert weight(kept) <= 2 * 1024 * KIB < weight(kept) + 1100  # full up to the cap
    assert [line.text for line in kept[1:4]] == [f"{line}0", f"{line}1", f"{line}2"]
    assert sum(line.text.startswith(TRUNCATED) for line in lines) == 1
    assert "this one is past the cap too" not in {line.text for line in lines}
    assert not [line for line in lines if line.text.startswith("Environment ready")]


def test_a_long_line_is_cut_at_the_line_cap(
    chatty: type[ChattyBuilder], new_build: Build, settings: Any
) -> None:
    settings.BINDERY_BUILD_LOG_MAX_LINE = 4 * KIB
    chatty.script = [("building", "€" * 10_000), ("building", "short")]  # 30 000 bytes
    assert services.execute_build(new_build.pk) == Build.Status.READY
    texts = [line.text for line in stored(new_build)]
    assert texts[0].endswith(LINE_CUT)
    cut = texts[0].removesuffix(LINE_CUT)
    assert cut == "€" * (4 * KIB // 3)  # whole characters only: 1365 of 3 bytes, 4095 bytes
    assert texts[1:] == ["short", "Environment ready."]


def test_a_retried_build_keeps_counting_what_it_stored_and_truncates_once(
    chatty: type[ChattyBuilder], new_build: Build, settings: Any
) -> None:
    settings.BINDERY_BUILD_LOG_MAX_BYTES = 10 * KIB
    chatty.script = [("building", "x" * 1023) for _ in range(8)]  # 8 KiB: under the cap
    chatty.fail = BackendError("the index timed out", permanent=False)
    with pytest.raises(services.TransientBuildError):
        services.execute_build(new_build.pk)
    first = stored(new_build)
    assert not [line for line in first if line.text.startswith(TRUNCATED)]
    # the retry prints the same 8 KiB again: the cap counts both attempts
    assert services.execute_build(new_build.pk) == Build.Status.READY
    lines = stored(new_build)
    markers = [line for line in lines if line.text.startswith(TRUNCATED)]
    assert [m.text for m in markers] == [
        "… log truncated: the build printed more than 10 KiB; the rest is not stored"
    ]
    assert markers[0].n == lines[-1].n
    assert weight(lines[:-1]) <= 10 * KIB
    # a third sink (say, a late retry) stores nothing more and says nothing again
    sink = BuildLog(Build.objects.get(pk=new_build.pk))
    sink("more", phase="building")
    sink.close()
    assert stored(new_build) == lines


# --- pruning -------------------------------------------------------------------------------


def finished_build(
    build: Build, *, days_ago: float, status: str = "ready", lines: int = 3
) -> Build:
    BuildLogLine.objects.bulk_create(
        BuildLogLine(build=build, n=n, phase="building", text=f"line {n}")
        for n in range(1, lines + 1)
    )
    finished = timezone.now() - timedelta(days=days_ago) if status != "running" else None
    Build.objects.filter(pk=build.pk).update(status=status, finished_at=finished, log_size=lines)
    return Build.objects.get(pk=build.pk)


def test_prune_deletes_the_logs_of_old_finished_builds_and_keeps_the_builds(
    alice: Any, public_repo: Any, git_host: Any, settings: Any
) -> None:
    settings.BINDERY_BUILD_LOG_RETENTION_DAYS = 30

    def another() -> Build:
        git_host.commit(public_repo, {"notebook.ipynb": "{}"})  # a new version: a new build
        resolved, _ = services.resolve_input(alice, repo_url=public_repo.url, ref="main")
        return services.request_build(resolved, alice).build

    old = finished_build(another(), days_ago=31)
    old_failed = finished_build(another(), days_ago=45, status="failed", lines=5)
    recent = finished_build(another(), days_ago=29)
    running = finished_build(another(), days_ago=0, status="running")
    assert services.prune_build_logs() == 8
    assert not BuildLogLine.objects.filter(build__in=[old, old_failed]).exists()
    assert Build.objects.filter(pk__in=[old.pk, old_failed.pk], log_size=0).count() == 2
    assert BuildLogLine.objects.filter(build=recent).count() == 3
    assert BuildLogLine.objects.filter(build=running).count() == 3
    assert Build.objects.get(pk=recent.pk).log_size == 3
    assert services.prune_build_logs() == 0  # safe to run twice
    # a shorter retention reaches the recent one too, never the running one
    assert services.prune_build_logs(days=7) == 3
    assert BuildLogLine.objects.filter(build=running).count() == 3
    assert Build.objects.count() == 4


def test_beat_prunes_build_logs_with_the_task(settings: Any) -> None:
    from apps.builds.tasks import prune_build_logs

    entry = django_settings.CELERY_BEAT_SCHEDULE["prune-build-logs"]
    assert entry["task"] == prune_build_logs.name == "apps.builds.tasks.prune_build_logs"
    assert prune_build_logs.apply().get() == 0  # the task runs the service
