"""Every main page fits a 390 px phone: no horizontal scroll, in a real headless Chromium.

The pages are served by a real server (pytest-django's ``live_server``) from the test
database, with long repository URLs, a running session and a build, so the long values that
used to widen pages (encoded specs in ``<code>``, the sessions table) are on them. Each page
is also photographed at 1280 px and at 390 px into ``BINDERY_SCREENSHOT_DIR`` when it is set
(for people to look at), else into the test's tmp directory.

Needs Debian's ``chromium`` (bin/setup installs it as root) and Python Playwright (dev
dependency; its own browser download is never used). In CI a missing browser fails.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.test import Client
from django.urls import NoReverseMatch, reverse

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build, BuildLogLine
from apps.sessions.models import Session
from apps.teams.models import Membership, Role, Team
from apps.testing import require

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
LONG_URL = "http://127.0.0.1:19560/a-rather-long-group-name/and-a-long-project-name-too.git"
LONG_SPEC = "http%3A%2F%2F127.0.0.1%3A19560%2Fa-rather-long-group-name%2Fand-a-long-project-name-too.git/HEAD"  # noqa: E501

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def raw_uris(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live server passes the undecoded path as ``RAW_URI``, as gunicorn does (daphne
    passes ``raw_path``): Django's test server decodes it only, and a /v2/git/ spec
    (``http%3A%2F%2F…``) no longer parses once decoded."""
    from django.core.servers.basehttp import WSGIRequestHandler

    decoded_only = WSGIRequestHandler.get_environ

    def get_environ(self: Any) -> dict[str, Any]:
        environ = decoded_only(self)
        environ["RAW_URI"] = self.path
        return environ

    monkeypatch.setattr(WSGIRequestHandler, "get_environ", get_environ)


@pytest.fixture
def site(live_server: Any, world: dict[str, Any], raw_uris: None) -> dict[str, Any]:
    """Everything that needs the database, done before the browser starts (Playwright's
    sync API runs an event loop, in which Django refuses database calls)."""
    cookie = {**_session_cookie(world["user"]), "url": live_server.url}
    return {"url": live_server.url, "cookie": cookie, "pages": _pages(world),
            "sessions": reverse("sessions")}  # fmt: skip


@pytest.fixture
def browser(site: dict[str, Any]) -> Iterator[Any]:
    require(os.path.exists(CHROMIUM), "Debian's chromium is not installed (bin/setup as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "Python Playwright is not installed (uv sync --group dev)")
        raise
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("BINDERY_SCREENSHOT_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def world(settings: Any, git_server: Any) -> dict[str, Any]:
    """A signed-in researcher with a team, a ready build of a long git URL, a running
    session of it and one that ended; a repository on the real git server that launches up
    to the quota (one session at a time: the running one)."""
    settings.BINDERY_ALLOWED_GIT_HOSTS = ["127.0.0.1:19560", git_server.host]
    settings.BINDERY_MAX_SESSIONS_PER_USER = 1
    quota_repo = git_server.create_repo(
        f"a-rather-long-group-name/over-the-quota-{uuid.uuid4().hex[:8]}",
        {"requirements.txt": "\n"},
    )
    user: Any = UserFactory(username="researcher-with-a-long-name", email="r@example.org")
    team = Team.objects.create(name="Ocean Lab", slug="ocean-lab")
    Membership.objects.create(team=team, user=user, role=Role.OWNER)
    build = Build.objects.create(
        provider="git", spec=LONG_SPEC, repo_url=LONG_URL, repo_slug="long-project",
        display_name="127.0.0.1:19560/a-rather-long-group-name/and-a-long-project-name-too",
        resolved_ref="0123456789abcdef0123456789abcdef01234567", resolved={}, build_key="k",
        status="ready", phase="ready", requested_by=user, environment_key="e" * 64,
    )  # fmt: skip
    BuildLogLine.objects.create(build=build, n=1, text="x" * 300)
    running = Session.objects.create(
        user=user, build=build, hub_user=user.hub_name, provider="git", spec=LONG_SPEC,
        status="ready", memory_bytes=2 * 1024**3, url="http://127.0.0.1:1/user/x/",
    )  # fmt: skip
    failed = Session.objects.create(
        user=user, build=build, hub_user=user.hub_name, provider="git", spec=LONG_SPEC,
        status="failed", error_message="The build failed: " + "y" * 200,
    )  # fmt: skip
    return {"user": user, "team": team, "build": build, "failed": failed, "running": running,
            "quota_spec": f"{quote(quota_repo.url, safe='')}/main"}  # fmt: skip


def _credentials_path() -> str | None:
    for name in ("credentials", "repo-credentials", "repos-credentials"):
        try:
            return reverse(name)
        except NoReverseMatch:
            continue
    return None


def _pages(world: dict[str, Any]) -> list[tuple[str, str | None, bool]]:
    """(name, path, signed in) for every page the width rule covers."""
    return [
        ("home-signed-out", "/", False),
        ("home", "/", True),
        ("launch", f"/v2/git/{LONG_SPEC.removesuffix('/HEAD')}/a-long-branch-name", True),
        (
            "launch-running",
            f"/v2/git/{LONG_SPEC}?labpath=notebooks/a-long-notebook-name.ipynb",
            True,
        ),
        ("launch-quota", f"/v2/git/{world['quota_spec']}", True),
        ("launch-failed", reverse("session-launch", args=[world["failed"].pk]), True),
        ("dashboard", reverse("sessions"), True),
        ("build-receipt", reverse("build", args=[world["build"].pk]), True),
        ("credentials", _credentials_path(), True),
        ("team", reverse("team", args=[world["team"].slug]), True),
    ]


def _session_cookie(user: Any) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    return {"name": settings.SESSION_COOKIE_NAME,
            "value": client.cookies[settings.SESSION_COOKIE_NAME].value}  # fmt: skip


def test_every_page_fits_a_phone_without_horizontal_scroll(site, browser, shots):
    too_wide = []
    for name, path, signed_in in site["pages"]:
        if path is None:
            too_wide.append(f"{name}: no such page is routed")
            continue
        for label, viewport in (("390", PHONE), ("desktop", DESKTOP)):
            context = browser.new_context(viewport=viewport)
            if signed_in:
                context.add_cookies([site["cookie"]])
            page = context.new_page()
            response = page.goto(site["url"] + path, wait_until="load")
            assert response is not None and response.status == 200, (name, response)
            if name.startswith("home"):  # the preview, with the longest values it shows
                page.fill("#repository", LONG_URL)
                page.wait_for_selector("#launch-result:not([hidden])")
            if name == "launch-running":
                assert page.locator("#launch-running").is_visible()
            if name == "launch-quota":  # the refusal, said before anyone clicks Launch
                assert page.locator("#launch-button").is_disabled()
                assert "(your limit is 1)" in page.inner_text("#launch-preview")
            page.screenshot(path=str(shots / f"{name}-{label}.png"), full_page=True)
            if label == "390":
                scroll, inner = page.evaluate(
                    "[document.documentElement.scrollWidth, window.innerWidth]"
                )
                if scroll > inner:
                    too_wide.append(f"{name}: {scroll} px wide at {inner} px")
            context.close()
    assert too_wide == []


def test_the_navigation_folds_into_a_menu_on_a_phone(site, browser):
    context = browser.new_context(viewport=PHONE)
    context.add_cookies([site["cookie"]])
    page = context.new_page()
    page.goto(site["url"] + site["sessions"])
    sessions_link = page.locator(".nav-links a", has_text="Sessions")
    assert not sessions_link.is_visible()
    page.locator("button.nav-toggle").click()
    assert sessions_link.is_visible()
    assert sessions_link.get_attribute("aria-current") == "page"
    assert page.locator("button.nav-toggle").get_attribute("aria-expanded") == "true"
    context.close()


def test_enter_right_after_typing_launches_without_a_second_enter(site, browser):
    """Paste + Enter: the first Enter waits for the preview and goes to the launch page
    (signed out: to sign in, with the launch kept as ``next``)."""
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    page.goto(site["url"] + "/")
    page.fill("#repository", "http://127.0.0.1:19560/elsewhere/other.git")
    page.press("#repository", "Enter")  # before the 250 ms typing pause is over
    page.wait_for_url(re.compile(r"/accounts/login/\?next=/v2/git/.*other\.git"), timeout=10_000)
    context.close()


def test_a_refused_host_gets_a_sentence_and_no_link_nor_badge(site, browser):
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    page.goto(site["url"] + "/")
    page.fill("#repository", "http://10.0.0.7/internal.git")
    page.wait_for_selector("#launch-error:not([hidden])")
    assert "private or local network" in page.inner_text("#launch-error-text")
    assert "HOST_FORBIDDEN" not in page.inner_text("#launch-error-text")
    assert page.locator("#launch-result").is_hidden()
    context.close()


def test_the_signed_in_preview_offers_the_running_session(site, browser):
    context = browser.new_context(viewport=DESKTOP)
    context.add_cookies([site["cookie"]])
    page = context.new_page()
    page.goto(site["url"] + "/")
    page.fill("#repository", LONG_URL)
    page.wait_for_selector("#launch-running:not([hidden])")
    assert page.locator("#launch-button").is_hidden()
    assert page.get_attribute("#running-open", "href").endswith("/open/")
    another = page.get_attribute("#running-start-another", "href")
    assert "/v2/git/" in another and another.endswith("another=1")
    context.close()


def test_the_dashboard_redraws_a_row_in_place_when_its_state_changes(site, browser, world):
    import threading

    def stop_it() -> None:  # the ORM outside Playwright's event loop
        from django.db import connection

        Session.objects.filter(user=world["user"], status="ready").update(status="stopping")
        connection.close()

    context = browser.new_context(viewport=PHONE)
    context.add_cookies([site["cookie"]])
    page = context.new_page()
    page.goto(site["url"] + site["sessions"])
    page.evaluate("window.notReloaded = true")
    assert page.locator("#active-rows a[data-action=open]").count() == 1
    worker = threading.Thread(target=stop_it)
    worker.start()
    worker.join()
    page.wait_for_selector("#active-rows .badge-stopping", timeout=15_000)
    assert page.evaluate("window.notReloaded") is True
    row = page.locator("#active-rows tr").first
    assert "Stopping…" in row.inner_text()
    assert row.locator("a[data-action=open], a[data-action=watch], form").count() == 0
    context.close()


# Grows by the MiB given on each stdin line, says "held" once it holds them (touched).
GROW = """
import sys
held = []
for line in sys.stdin:
    block = bytearray(int(line) << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    held.append(block)
    print("held", flush=True)
"""


def test_the_dashboard_shows_memory_used_and_updates_it_in_place(
    site, browser, world, settings, shots, tmp_path
):
    """The running session's server in a real cgroup, named and placed as the spawner does
    for this hub directory: the page says "N MB of 2.0 GB", and when the server grows the
    poll rewrites that cell only (the row and its buttons stay the same elements)."""
    import subprocess
    import sys

    from playwright.sync_api import expect

    from apps import cgroups
    from portal.hubconfig import hub_config

    memory_dir = Path(cgroups.CGROUP_ROOT, "memory" if cgroups.detect() == "v1" else "")
    require(
        cgroups.detect() in ("v1", "v2") and os.access(memory_dir, os.W_OK),
        "no writable memory cgroup (root and cgroup v1 or delegated v2 needed)",
    )
    settings.BINDERY_HUB_DIR = tmp_path / "hub"  # a cgroup parent of this test's own
    parent = hub_config()["BinderySpawner"]["cgroup_parent"]
    session = world["running"]
    group = cgroups.create(
        cgroups.safe_name(session.hub_user, session.server_name),
        cgroups.Limits(2 * 1024**3, 64),
        parent=parent,
    )
    child = subprocess.Popen([sys.executable, "-c", GROW], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True,
                             preexec_fn=group.preexec_fn())  # fmt: skip

    def grow(mib: int) -> None:
        """Hold ``mib`` MiB more, touched."""
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(f"{mib}\n")
        child.stdin.flush()
        assert child.stdout.readline() == "held\n"

    def shown_mb(text: str) -> int:
        found = re.fullmatch(r"(\d+)\xa0MB of 2\.0\xa0GB", text)
        assert found, repr(text)
        return int(found.group(1))

    row = f'#active-rows tr[data-session="{session.pk}"]'
    try:
        grow(100)
        context = browser.new_context(viewport=DESKTOP)
        context.add_cookies([site["cookie"]])
        page = context.new_page()
        page.goto(site["url"] + site["sessions"])
        cell = page.locator(f"{row} [data-slot=memory]")
        first = cell.text_content() or ""
        assert 100 <= shown_mb(first) < 400
        page.locator(row).evaluate("tr => { tr.dataset.marked = 'kept'; }")
        grow(300)
        expect(cell).not_to_have_text(first, timeout=15_000)  # the next poll
        assert shown_mb(cell.text_content() or "") >= shown_mb(first) + 250
        # the same row element: only its memory text was rewritten
        assert page.locator(row).get_attribute("data-marked") == "kept"
        page.screenshot(path=str(shots / "dashboard-memory-desktop.png"), full_page=True)
        context.close()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
        assert group.release()
        for top in [Path(cgroups.CGROUP_ROOT, c, parent) for c in cgroups.CONTROLLERS] + [
            Path(cgroups.CGROUP_ROOT, parent)
        ]:
            if top.is_dir():
                top.rmdir()
