"""Usage ("X left") and limits over the API. Outsiders get 404 for a team; members read,
owners and admins set the team's pool and members' caps within the ceiling; staff set users'
limits and teams' ceilings."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import User
from apps.quotas import ledger, services
from apps.quotas.api.serializers import QuotaSerializer, TeamUsageSerializer, UsageSerializer
from apps.quotas.exports import CsvRenderer, usage_csv
from apps.teams.models import Membership, Team
from apps.teams.selectors import get_member, get_membership_for_user
from portal.api import current_user
from portal.errors import InvalidInput, NotFound, PermissionDenied
from portal.utils import as_id

PERIOD = OpenApiParameter("period", str, description="A past month, YYYY-MM (default: now).")


def _period(request: Request) -> ledger.Period | None:
    text = request.query_params.get("period", "")
    if not text:
        return None
    try:
        return ledger.parse_period(text)
    except ValueError:
        raise InvalidInput("period must be a month, YYYY-MM.", code="PERIOD_INVALID") from None


def _body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise InvalidInput("Send an object of limit names.", code="QUOTA_INVALID")
    return dict(request.data)


class UsageView(APIView):
    @extend_schema(
        parameters=[PERIOD, OpenApiParameter("team", str, description="My use within a team.")],
        responses=UsageSerializer,
        summary="My usage and what is left of each limit",
    )
    def get(self, request: Request) -> Response:
        user = current_user(request)
        team = None
        if request.query_params.get("team"):
            team = get_membership_for_user(user, request.query_params["team"]).team
        return Response(services.usage_for(user, team, _period(request)).as_dict())


def _member_rows(team: Team, period: ledger.Period | None) -> list[dict[str, Any]]:
    return [
        {
            "membership": membership.pk,
            "user": {
                "id": membership.user.pk,
                "username": membership.user.username,
                "email": membership.user.email,
            },
            "role": membership.role,
            "limits": [limit.as_dict() for limit in report.limits],
        }
        for membership, report in services.member_usage(team, period)
    ]


def _manager(user: User, slug: str) -> Membership:
    membership = get_membership_for_user(user, slug)
    if not membership.can_manage:
        raise PermissionDenied("Only team owners and admins can see each member's usage.")
    return membership


class TeamUsageView(APIView):
    @extend_schema(
        parameters=[PERIOD, OpenApiParameter("by", str, enum=["member"],
                                             description="Per member (owners and admins).")],
        responses=TeamUsageSerializer,
        summary="The team's usage against its pool (members); per member for admins",
    )  # fmt: skip
    def get(self, request: Request, slug: str) -> Response:
        user = current_user(request)
        membership = get_membership_for_user(user, slug)
        period = _period(request)
        body = services.team_usage(membership.team, period).as_dict()
        if request.query_params.get("by") == "member":
            _manager(user, slug)
            body["members"] = _member_rows(membership.team, period)
        elif request.query_params.get("by"):
            raise InvalidInput("by may only be member.", code="INVALID_INPUT")
        return Response(body)


class TeamUsageCsvView(APIView):
    renderer_classes = [JSONRenderer, CsvRenderer]  # errors as JSON; a client may ask for CSV

    @extend_schema(parameters=[PERIOD], responses={(200, "text/csv"): bytes},
                   summary="Each member's usage as CSV (owners and admins)")  # fmt: skip
    def get(self, request: Request, slug: str) -> HttpResponse:
        membership = _manager(current_user(request), slug)
        period = _period(request)
        rows = services.member_usage(membership.team, period)
        label = (period or ledger.period_of(timezone.now())).label
        return usage_csv(membership.team, rows, label)


class TeamQuotaView(APIView):
    @extend_schema(responses=QuotaSerializer, summary="The team's effective limits (members)")
    def get(self, request: Request, slug: str) -> Response:
        membership = get_membership_for_user(current_user(request), slug)
        return Response(services.team_quota(membership.team))

    @extend_schema(request=QuotaSerializer, responses=QuotaSerializer,
                   summary="Set the team's pool within its ceiling (owners, admins)")  # fmt: skip
    def put(self, request: Request, slug: str) -> Response:
        membership = get_membership_for_user(current_user(request), slug)
        return Response(services.set_team_quota(membership, _body(request)))


class MemberQuotaView(APIView):
    @extend_schema(responses=QuotaSerializer,
                   summary="A member's effective limits within the team")  # fmt: skip
    def get(self, request: Request, slug: str, membership_id: int) -> Response:
        actor = get_membership_for_user(current_user(request), slug)
        member = get_member(actor, membership_id)
        if member.pk != actor.pk and not actor.can_manage:
            raise PermissionDenied("Only team owners and admins can see another member's cap.")
        return Response(services.member_quota(member))

    @extend_schema(request=QuotaSerializer, responses=QuotaSerializer,
                   summary="Set a member's cap within the team (owners, admins)")  # fmt: skip
    def put(self, request: Request, slug: str, membership_id: int) -> Response:
        actor = get_membership_for_user(current_user(request), slug)
        member = get_member(actor, membership_id)
        return Response(services.set_member_quota(actor, member, _body(request)))


def _staff_or_404(request: Request) -> User:
    user = current_user(request)
    if not user.is_staff:
        raise NotFound()
    return user


class UserQuotaView(APIView):
    @extend_schema(responses=QuotaSerializer,
                   summary="A user's effective personal limits (staff; yourself)")  # fmt: skip
    def get(self, request: Request, user_id: int) -> Response:
        actor = current_user(request)
        if not actor.is_staff and actor.pk != as_id(user_id):
            raise NotFound()
        target = User.objects.filter(pk=as_id(user_id)).first()
        if target is None:
            raise NotFound("No such user.")
        return Response(services.user_quota(target))

    @extend_schema(request=QuotaSerializer, responses=QuotaSerializer,
                   summary="Set a user's personal limits (staff)")  # fmt: skip
    def put(self, request: Request, user_id: int) -> Response:
        actor = current_user(request)
        if not actor.is_staff:
            if actor.pk == as_id(user_id):
                raise PermissionDenied("Only staff can set your limits.")
            raise NotFound()
        target = User.objects.filter(pk=as_id(user_id)).first()
        if target is None:
            raise NotFound("No such user.")
        return Response(services.set_user_quota(actor, target, _body(request)))


class TeamCeilingView(APIView):
    @extend_schema(responses=QuotaSerializer,
                   summary="The most the team's admins may set (staff)")  # fmt: skip
    def get(self, request: Request, slug: str) -> Response:
        _staff_or_404(request)
        return Response(services.team_ceiling(_team(slug)))

    @extend_schema(request=QuotaSerializer, responses=QuotaSerializer,
                   summary="Set the team's ceiling (staff)")  # fmt: skip
    def put(self, request: Request, slug: str) -> Response:
        actor = _staff_or_404(request)
        return Response(services.set_team_ceiling(actor, _team(slug), _body(request)))


def _team(slug: str) -> Team:
    team = Team.objects.filter(slug=slug).first()
    if team is None:
        raise NotFound("No such team.")
    return team
