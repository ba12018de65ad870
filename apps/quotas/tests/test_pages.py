"""The usage and quota pages, through the real views: my usage (this month, past months,
each team), the dashboard's line and warning, the launch preview on the /v2/ page and the
launch form (the refusal word for word the API's), the team page's Usage and Quota
sections, the member cap page and the CSV export."""

from __future__ import annotations

import csv
import html as htmllib
import io
import json
import re
import uuid
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.utils import timezone

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.quotas import ledger, services
from apps.quotas.models import Quota, UsageRecord
from apps.sessions.models import Session

pytestmark = pytest.mark.django_db

GB = 1024**3


@pytest.fixture
def limits(settings):
    """Every limit bounded, so each one has a "left" to show."""
    settings.BINDERY_MAX_SESSIONS_PER_USER = 3
    settings.BINDERY_MAX_BUILDS_PER_USER = 2
    settings.BINDERY_SESSION_MEMORY = "2G"
    settings.BINDERY_SESSION_CPU = "1"
    settings.BINDERY_SESSION_HOURS_PER_MONTH = "40"
    settings.BINDERY_BUILD_MINUTES_PER_MONTH = "120"
    settings.BINDERY_VOLUME_STORAGE = "10G"
    return settings


def text_of(response) -> str:
    """The page as people read it: tags out, entities and no-break spaces undone."""
    page = re.sub(r"<script.*?</script>", "", response.content.decode(), flags=re.S)
    page = htmllib.unescape(re.sub(r"<[^>]+>", " ", page)).replace("\xa0", " ")
    return re.sub(r"\s+", " ", page)


def limit_text(response, name: str, within: str = "") -> str:
    """The text of one limit's card (of the section whose id is ``within``)."""
    page = response.content.decode()
    if within:
        page = page.split(f'id="{within}"', 1)[1].split("</section>", 1)[0]
    found = re.search(rf'<li class="limit [^"]*" data-limit="{name}">(.*?)</li>', page, re.S)
    assert found, f"no card for {name}"
    body = htmllib.unescape(re.sub(r"<[^>]+>", " ", found.group(1))).replace("\xa0", " ")
    return re.sub(r"\s+", " ", body).strip()


def record(user, hours: float, *, period=None, team=None, kind="session") -> UsageRecord:
    """One ledger row of ``hours`` of time (a build's minutes: pass minutes / 60)."""
    period = period or ledger.period_of(timezone.now())
    start = period.start + timedelta(hours=1)
    return UsageRecord.objects.create(
        key=f"test:{uuid.uuid4().hex}", kind=kind, period=period.first, start=start,
        end=start + timedelta(hours=hours), quantity=hours * 3600, user=user, team=team,
        scope="team" if team is not None else "personal",
    )  # fmt: skip


def running_session(user, team=None, **fields) -> Session:
    build = Build.objects.create(
        provider="git", spec="x", repo_url="http://example.org/lab/ocean-model.git",
        repo_slug="ocean-model", display_name="lab/ocean-model", resolved_ref="0" * 40,
        resolved={}, build_key=f"k{uuid.uuid4().hex[:8]}", status="ready",
    )  # fmt: skip
    return Session.objects.create(
        user=user, team=team, build=build, hub_user=user.hub_name, provider="git",
        spec="x", status="ready", memory_bytes=2 * GB, **fields,
    )  # fmt: skip


# --- my usage -------------------------------------------------------------------------------


def test_usage_page_needs_sign_in(client):
    response = client.get("/account/usage/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_usage_page_says_what_is_left_of_each_limit(client, limits):
    user = UserFactory()
    record(user, 8.5)
    running_session(user)
    client.force_login(user)
    response = client.get("/account/usage/")
    assert response.status_code == 200
    renews = f"{ledger.period_of(timezone.now()).end:%-d %B %Y}"
    assert limit_text(response, "session_hours") == (
        f"Session hours 31.5 of 40 hours left this month 8.5 hours used · renews on {renews}"
    )
    assert limit_text(response, "sessions") == "Sessions at once 2 of 3 sessions left 1 running now"
    assert limit_text(response, "build_minutes").startswith(
        "Build minutes 120 of 120 build minutes left this month"
    )
    assert limit_text(response, "builds").startswith("Builds at once 2 of 2 builds left")
    assert limit_text(response, "storage").startswith(
        "Storage per volume 10 GB of 10 GB left on your home volume"
    )
    # per-session limits: a bound, not something used up
    assert limit_text(response, "memory").startswith("Memory per session Up to 2 GB per session")
    assert limit_text(response, "cpu").startswith("CPU per session Up to 1 CPU per session")
    page = response.content.decode()
    assert page.count('class="limit-bar"') == 5  # the pool limits and storage have bars
    assert '<a href="/account/usage/"' in page  # in the account menu


def test_an_unlimited_limit_says_unlimited(client, limits):
    limits.BINDERY_SESSION_HOURS_PER_MONTH = ""
    user = UserFactory()
    record(user, 2)
    client.force_login(user)
    response = client.get("/account/usage/")
    assert (
        limit_text(response, "session_hours") == "Session hours Unlimited 2 hours used this month"
    )


def test_past_months_are_listed_from_the_ledger_and_show_the_monthly_limits(client, limits):
    user = UserFactory()
    this = ledger.period_of(timezone.now())
    before = this.previous().previous()
    record(user, 12, period=before)
    record(user, 3 / 60, period=before, kind="build")
    record(UserFactory(), 5, period=this.previous())  # someone else's month is not listed
    client.force_login(user)
    page = client.get("/account/usage/").content.decode()
    assert f'href="/account/usage/?period={before.label}"' in page
    assert f'href="/account/usage/?period={this.previous().label}"' not in page
    assert f"{this.name} (this month)" in page

    response = client.get(f"/account/usage/?period={before.label}")
    assert response.status_code == 200
    assert f'href="/account/usage/?period={before.label}" aria-current="date"' in (
        response.content.decode()
    )
    assert limit_text(response, "session_hours") == (
        f"Session hours 12 of 40 hours used In {before.name}, against today's limit"
    )
    assert limit_text(response, "build_minutes").startswith(
        "Build minutes 3 of 120 build minutes used"
    )
    assert 'data-limit="sessions"' not in response.content.decode()  # not a monthly limit


def test_an_unreadable_or_future_period_shows_this_month(client, limits):
    user = UserFactory()
    client.force_login(user)
    for period in ("nonsense", "2999-01"):
        response = client.get(f"/account/usage/?period={period}")
        assert response.status_code == 200
        assert "left this month" in limit_text(response, "session_hours")


def test_each_team_has_its_section_with_the_use_within_it(client, crew, limits):
    Quota.objects.create(scope="team", team=crew.team, values={"session_hours": 100})
    record(crew.member, 6, team=crew.team)
    record(crew.owner, 30, team=crew.team)
    record(crew.member, 1)
    client.force_login(crew.member)
    response = client.get("/account/usage/")
    assert "In Ocean Lab" in text_of(response)
    # personal: only the personal hour; in the team: the member's own 6 of their 40 cap
    # (tighter than the pool's 100 - 36)
    assert limit_text(response, "session_hours", "usage-personal").startswith(
        "Session hours 39 of 40 hours left"
    )
    assert limit_text(response, "session_hours", "usage-team-ocean-lab").startswith(
        "Session hours 34 of 40 hours left"
    )


# --- the dashboard --------------------------------------------------------------------------


def test_dashboard_says_hours_and_sessions_left_and_links_to_usage(client, limits):
    user = UserFactory()
    record(user, 27.5)
    running_session(user)
    client.force_login(user)
    page = client.get("/sessions/").content.decode()
    assert (
        '<a href="/account/usage/" >12.5 of 40 session hours left this month · '
        "2 of 3 sessions left</a>"
    ) in page
    assert "stops when this month" not in page


def test_dashboard_warns_of_a_session_about_to_run_out_of_hours(client, limits):
    user = UserFactory()
    warned = running_session(user, quota_warned_at=timezone.now())
    running_session(user)  # not warned: no banner for it
    client.force_login(user)
    response = client.get("/sessions/")
    page = response.content.decode()
    assert page.count('class="flash flash-warning quota-warning"') == 1
    assert f'data-quota-warning="{warned.pk}"' in page
    assert "This session stops when this month's session hours run out." in text_of(response)


# --- before a launch: the /v2/ page and the launch form ------------------------------------


@pytest.fixture
def repo(git_host):
    return git_host.create_repo(f"org/preview-{uuid.uuid4().hex[:8]}", {"requirements.txt": "\n"})


def v2(url: str) -> str:
    return f"/v2/git/{quote(url, safe='')}/main"


def get_v2(client, page: str, **headers):
    return client.get(page, REQUEST_URI=page, HTTP_ACCEPT="text/html", **headers)


def preview_text(response) -> str:
    found = re.search(
        r'<div id="launch-preview"[^>]*>(.*?)</div>\s*<button', response.content.decode(), re.S
    )
    assert found, response.content.decode()
    body = htmllib.unescape(re.sub(r"<[^>]+>", " ", found.group(1))).replace("\xa0", " ")
    return re.sub(r"\s+", " ", body).strip()


def launch_config(response) -> dict:
    found = re.search(r'<script id="launch-config" type="application/json">(.*?)</script>',
                      response.content.decode(), re.S)  # fmt: skip
    assert found
    return json.loads(found.group(1))


def test_v2_page_says_what_the_launch_will_use_and_what_is_left(client, limits, repo):
    user = UserFactory()
    record(user, 8.5)
    running_session(user)
    client.force_login(user)
    response = get_v2(client, v2(repo.url))
    assert response.status_code == 200
    assert preview_text(response) == (
        "This launch will use up to 2 GB of memory and 1 CPU. You have 2 of 3 sessions and "
        "31.5 of 40 session hours left this month. Your usage"
    )
    assert re.search(r'<button type="submit" id="launch-button">Launch</button>',
                     response.content.decode())  # fmt: skip


def test_v2_page_refuses_with_the_apis_sentence_and_disables_launch(
    client, token_client, limits, repo
):
    limits.BINDERY_MAX_SESSIONS_PER_USER = 0
    user = UserFactory()
    api = token_client(user).post("/api/v1/sessions/", {"repo_url": repo.url, "ref": "main"},
                                  format="json")  # fmt: skip
    assert api.status_code == 429
    detail = api.json()["detail"]
    client.force_login(user)
    # a click in the portal would launch at once: not when the launch would be refused
    response = get_v2(client, v2(repo.url), HTTP_SEC_FETCH_SITE="same-origin")
    assert response.status_code == 200
    found = re.search(r'<p id="launch-refusal">(.*?)</p>', response.content.decode(), re.S)
    assert found and htmllib.unescape(found.group(1)) == detail
    assert (
        detail == "You already run 0 sessions (your limit is 0). Stop one before starting another."
    )
    assert '<button type="submit" id="launch-button" disabled>Launch</button>' in (
        response.content.decode()
    )
    assert launch_config(response)["autostart"] is False
    assert not Session.objects.exists()


def test_v2_page_previews_the_team_chosen_and_its_refusal(client, token_client, crew, limits, repo):
    Quota.objects.create(scope="team", team=crew.team, values={"sessions": 0})
    api = token_client(crew.member).post(
        "/api/v1/sessions/", {"repo_url": repo.url, "ref": "main", "team": "ocean-lab"},
        format="json",
    )  # fmt: skip
    assert api.status_code == 429
    client.force_login(crew.member)
    page = v2(repo.url)
    personal = get_v2(client, page)
    assert preview_text(personal).startswith("This launch will use up to 2 GB of memory")
    team = get_v2(client, page + "?team=ocean-lab")
    found = re.search(r'<p id="launch-refusal">(.*?)</p>', team.content.decode(), re.S)
    assert found and htmllib.unescape(found.group(1)) == api.json()["detail"]
    # the form has a team select: its script disables Launch while the choice is refused
    assert 'data-team-select="#launch-team"' in team.content.decode()
    # the fragment the script asks for, for each choice
    fragment = client.get("/account/usage/preview/?team=ocean-lab").content.decode()
    assert "data-refused" in fragment and htmllib.escape(api.json()["detail"]) in fragment
    mine = client.get("/account/usage/preview/?team=").content.decode().replace("\xa0", " ")
    assert "data-refused" not in mine and "This launch will use up to 2 GB" in mine


def test_the_preview_fragment_of_a_team_one_is_not_in_is_404(client, crew):
    assert client.get("/account/usage/preview/?team=ocean-lab").status_code == 404  # signed out
    client.force_login(crew.outsider)
    assert client.get("/account/usage/preview/?team=ocean-lab").status_code == 404


def test_an_anonymous_visitor_sees_the_preview_without_getting_an_owner(client, settings, repo):
    settings.BINDERY_ANONYMOUS_LAUNCH = True
    settings.BINDERY_MAX_SESSIONS_ANONYMOUS = 1
    response = get_v2(client, v2(repo.url))
    assert preview_text(response).startswith("This launch will use up to 2 GB of memory")
    assert "You have 1 of 1 session left." in preview_text(response)
    assert "bindery_anonymous_owner" not in client.session


def test_launch_form_previews_and_refuses_with_the_apis_sentence(
    client, token_client, limits, repo
):
    user = UserFactory()
    client.force_login(user)
    response = client.get("/repos/launch/")
    assert preview_text(response) == (
        "This launch will use up to 2 GB of memory and 1 CPU. You have 3 of 3 sessions and "
        "40 of 40 session hours left this month. Your usage"
    )
    limits.BINDERY_MAX_SESSIONS_PER_USER = 0
    api = token_client(user).post("/api/v1/sessions/", {"repo_url": repo.url}, format="json")
    assert api.status_code == 429
    response = client.get("/repos/launch/")
    found = re.search(r'<p id="launch-refusal">(.*?)</p>', response.content.decode(), re.S)
    assert found and htmllib.unescape(found.group(1)) == api.json()["detail"]
    assert '<button type="submit" id="repo-launch-button" disabled>' in response.content.decode()


# --- the team page: Usage ---------------------------------------------------------------------


def test_members_see_the_teams_totals_but_not_each_member(client, crew, limits):
    Quota.objects.create(scope="team", team=crew.team, values={"session_hours": 100})
    record(crew.member, 6, team=crew.team)
    record(crew.owner, 30, team=crew.team)
    client.force_login(crew.member)
    response = client.get("/teams/ocean-lab/")
    assert response.status_code == 200
    assert limit_text(response, "session_hours", "usage").startswith(
        "Session hours 64 of 100 hours left this month"
    )
    page = response.content.decode()
    assert "By member" not in page and "usage.csv" not in page and 'id="quota"' not in page


def test_admins_see_each_member_past_months_and_the_export(client, crew, limits):
    Quota.objects.create(scope="team", team=crew.team, values={"session_hours": 100})
    last = ledger.period_of(timezone.now()).previous()
    record(crew.member, 6, team=crew.team)
    record(crew.member, 9, team=crew.team, period=last)
    client.force_login(crew.admin)
    response = client.get("/teams/ocean-lab/")
    page = response.content.decode()
    row = re.search(rf'<tr data-membership="{crew.member_m.pk}">(.*?)</tr>', page, re.S)
    assert row and "6 of 40 hours" in row.group(1) and "0 of 3 sessions" in row.group(1)
    assert (
        f'href="/teams/ocean-lab/usage.csv?period={ledger.period_of(timezone.now()).label}"' in page
    )
    assert f'href="/teams/ocean-lab/?period={last.label}#usage"' in page

    past = client.get(f"/teams/ocean-lab/?period={last.label}")
    assert limit_text(past, "session_hours", "usage").startswith(
        "Session hours 9 of 100 hours used"
    )
    row = re.search(rf'<tr data-membership="{crew.member_m.pk}">(.*?)</tr>', past.content.decode(),
                    re.S)  # fmt: skip
    assert row and "9 of 40 hours" in row.group(1) and "sessions" not in row.group(1)


def test_csv_export_for_admins(client, crew, limits):
    last = ledger.period_of(timezone.now()).previous()
    record(crew.member, 9, team=crew.team, period=last)
    record(crew.member, 2 / 60, team=crew.team, period=last, kind="build")
    client.force_login(crew.admin)
    response = client.get(f"/teams/ocean-lab/usage.csv?period={last.label}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert f"ocean-lab-usage-{last.label}.csv" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert list(rows[0])[:6] == ["member", "email", "role", "period", "sessions_used",
                                 "sessions_allowed"]  # fmt: skip
    assert len(rows[0]) == 4 + 2 * 7 and {r["period"] for r in rows} == {last.label}
    by_email = {r["email"]: r for r in rows}
    assert set(by_email) == {"owner@example.org", "admin@example.org", "member@example.org"}
    member = by_email["member@example.org"]
    assert member["role"] == "member"
    assert float(member["session_hours_used"]) == 9.0
    assert float(member["session_hours_allowed"]) == 40.0
    assert float(member["build_minutes_used"]) == 2.0
    assert member["sessions_used"] == ""  # not kept for a past month
    assert int(member["memory_allowed"]) == 2 * GB


def test_csv_export_refuses_members_and_hides_from_outsiders(client, crew):
    client.force_login(crew.member)
    assert client.get("/teams/ocean-lab/usage.csv").status_code == 403
    client.force_login(crew.outsider)
    assert client.get("/teams/ocean-lab/usage.csv").status_code == 404


def test_csv_export_refuses_an_unreadable_period(client, crew):
    client.force_login(crew.owner)
    assert client.get("/teams/ocean-lab/usage.csv?period=last-year").status_code == 400


# --- the team page: Quota -------------------------------------------------------------------


def form_fields(page: str, prefix: str) -> dict[str, str]:
    """The quota form's fields as the page fills them in (what a browser would send back)."""
    found = re.findall(rf'name="({prefix}-\w+)" id="[^"]+" value="([^"]*)"', page)
    assert len(found) == 7, page
    return {name: htmllib.unescape(value) for name, value in found}


def test_admin_saves_the_teams_pool(client, crew, limits):
    client.force_login(crew.admin)
    page = client.get("/teams/ocean-lab/").content.decode()
    data = form_fields(page, "pool")
    assert data["pool-memory"] == "2G" and data["pool-sessions"] == ""  # unlimited pool
    data.update({"pool-sessions": "4", "pool-memory": "4G", "pool-session_hours": "100",
                 "pool-cpu": "1.5"})  # fmt: skip
    response = client.post("/teams/ocean-lab/quota/", data)
    assert response.status_code == 302 and response["Location"] == "/teams/ocean-lab/#quota"
    quota = Quota.objects.get(scope="team", team=crew.team)
    # only what was changed is written; the rest keeps following the site's defaults
    assert quota.values == {"sessions": 4, "memory": 4 * GB, "session_hours": 100, "cpu": 1.5}
    assert quota.updated_by == crew.admin
    page = client.get("/teams/ocean-lab/").content.decode()
    assert form_fields(page, "pool")["pool-memory"] == "4G"


def test_blank_means_unlimited(client, crew, limits):
    Quota.objects.create(scope="team", team=crew.team, values={"sessions": 4})
    client.force_login(crew.owner)
    data = form_fields(client.get("/teams/ocean-lab/quota/").content.decode(), "pool")
    assert data["pool-sessions"] == "4"
    data["pool-sessions"] = ""
    assert client.post("/teams/ocean-lab/quota/", data).status_code == 302
    assert Quota.objects.get(scope="team", team=crew.team).values == {"sessions": None}


def test_a_member_cannot_set_the_pool_and_nothing_is_saved(client, crew):
    client.force_login(crew.member)
    response = client.post("/teams/ocean-lab/quota/", {"pool-sessions": "9"})
    assert response.status_code == 403
    assert client.get("/teams/ocean-lab/quota/").status_code == 403
    client.force_login(crew.outsider)
    assert client.post("/teams/ocean-lab/quota/", {"pool-sessions": "9"}).status_code == 404
    assert not Quota.objects.exists()


def test_above_the_ceiling_shows_the_services_sentence_and_saves_nothing(client, crew, settings):
    settings.BINDERY_QUOTA_CEILINGS = '{"sessions": 5}'
    with pytest.raises(services.QuotaAboveCeiling) as refused:
        services.set_team_quota(crew.admin_m, {"sessions": 10})
    client.force_login(crew.admin)
    data = form_fields(client.get("/teams/ocean-lab/").content.decode(), "pool")
    assert data["pool-sessions"] == "5"
    data.update({"pool-sessions": "10", "pool-builds": "3"})
    response = client.post("/teams/ocean-lab/quota/", data)
    assert response.status_code == 400
    page = response.content.decode()
    error = re.search(r'<small class="error" id="id_pool-sessions-error">(.*?)</small>', page)
    assert error and htmllib.unescape(error.group(1)) == refused.value.message
    assert refused.value.message.startswith(
        "sessions cannot be 10: the site allows a team at most 5."
    )
    assert "At most 5 sessions" in page  # the ceiling beside the field
    assert not Quota.objects.exists()


def test_an_unreadable_size_is_said_beside_the_field(client, crew):
    client.force_login(crew.admin)
    data = form_fields(client.get("/teams/ocean-lab/quota/").content.decode(), "pool")
    data["pool-memory"] = "lots"
    response = client.post("/teams/ocean-lab/quota/", data)
    assert response.status_code == 400
    assert "Enter a size such as 2G or 500M" in response.content.decode()
    assert not Quota.objects.exists()


def test_admin_sets_a_members_cap_within_the_pool(client, crew, limits):
    Quota.objects.create(scope="team", team=crew.team, values={"sessions": 4})
    client.force_login(crew.admin)
    team_page = client.get("/teams/ocean-lab/").content.decode()
    url = f"/teams/ocean-lab/members/{crew.member_m.pk}/quota/"
    assert f'href="{url}"' in team_page
    page = client.get(url).content.decode()
    assert "At most 4 sessions (Ocean Lab&#x27;s pool)" in page
    data = form_fields(page, "cap")
    data["cap-sessions"] = "1"
    response = client.post(url, data)
    assert response.status_code == 302
    assert Quota.objects.get(scope="member", membership=crew.member_m).values == {"sessions": 1}

    data["cap-sessions"] = "6"  # above the pool
    response = client.post(url, data)
    assert response.status_code == 400
    assert "sessions cannot be 6: the team's pool allows at most 4." in htmllib.unescape(
        response.content.decode()
    )
    assert Quota.objects.get(scope="member", membership=crew.member_m).values == {"sessions": 1}


def test_a_members_cap_page_is_for_admins_only(client, crew):
    url = f"/teams/ocean-lab/members/{crew.owner_m.pk}/quota/"
    client.force_login(crew.member)
    assert client.get(url).status_code == 403
    assert client.post(url, {"cap-sessions": "9"}).status_code == 403
    client.force_login(crew.outsider)
    assert client.get(url).status_code == 404
    assert not Quota.objects.exists()
