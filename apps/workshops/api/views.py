"""Workshops over the API. The instructor's endpoints answer 404 to anyone but the
workshop's instructors (its owner, its team's owners and admins); joining needs no account
for guest seats: the ``guest_token`` a first join returns is the guest's key to their seat."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import User
from apps.sessions import services as sessions
from apps.sessions.models import Session
from apps.teams.selectors import get_membership_for_user
from apps.workshops import selectors, services
from apps.workshops.api.serializers import (
    JoinedSerializer,
    JoinSerializer,
    JoinStatusQuerySerializer,
    SeatSerializer,
    StopAllSerializer,
    WorkshopCreateSerializer,
    WorkshopSerializer,
    WorkshopUpdateSerializer,
)
from apps.workshops.api.throttles import JoinRateThrottle
from apps.workshops.models import Seat, Workshop
from portal.api import Pagination, current_user
from portal.errors import NotFound


class SeatNotFound(NotFound):
    code = "WORKSHOP_SEAT_NOT_FOUND"
    default_message = "No seat in this workshop for this guest token."


def _counted(workshops: QuerySet[Workshop]) -> QuerySet[Workshop]:
    """Seats taken and warm servers, as subqueries: one query for a whole page (joins
    would multiply with the team memberships ``workshops_for`` filters on)."""

    def count(rows: QuerySet[Any]) -> Coalesce:
        counted = rows.order_by().values("workshop").annotate(n=Count("pk")).values("n")
        return Coalesce(Subquery(counted, output_field=IntegerField()), 0)

    unclaimed = Session.objects.filter(workshop=OuterRef("pk"), seat__isnull=True)
    return workshops.annotate(
        taken=count(Seat.objects.filter(workshop=OuterRef("pk"))),
        warm_ready=count(unclaimed.filter(status=Session.Status.READY)),
        warm_starting=count(
            unclaimed.filter(status__in=(Session.Status.LAUNCHING, Session.Status.BUILDING))
        ),
    )


def _workshop(request: Request, workshop_id: int) -> Workshop:
    return selectors.get_workshop_for_instructor(request.user, workshop_id)


WORKSHOP_ERRORS = {404: OpenApiResponse(description="Not yours (NOT_FOUND)")}


class WorkshopListView(APIView):
    @extend_schema(responses=WorkshopSerializer(many=True),
                   summary="Workshops I run (mine; my teams' as owner or admin)")  # fmt: skip
    def get(self, request: Request) -> Response:
        paginator = Pagination()
        page = paginator.paginate_queryset(_counted(selectors.workshops_for(request.user)), request)
        return paginator.get_paginated_response(WorkshopSerializer(page, many=True).data)

    @extend_schema(
        request=WorkshopCreateSerializer,
        responses={201: WorkshopSerializer},
        summary="Create a workshop: pinned to the commit its ref names now, built ahead",
        description="Seats (and each seat's cpu and memory) are checked against your quota, "
        "or the team's: 429 `QUOTA_EXCEEDED`. A team's workshop: its owners and admins only "
        "(a member gets 403, an outsider 404). The build starts at once: follow `build.url`.",
    )
    def post(self, request: Request) -> Response:
        serializer = WorkshopCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        user = current_user(request)
        slug = data.pop("team", None)
        team = get_membership_for_user(user, slug).team if slug else None
        workshop = services.create_workshop(
            user, team=team, memory_bytes=data.pop("memory", None), **data
        )
        return Response(WorkshopSerializer(workshop).data, status=status.HTTP_201_CREATED)


class WorkshopDetailView(APIView):
    @extend_schema(responses={200: WorkshopSerializer, **WORKSHOP_ERRORS}, summary="A workshop")
    def get(self, request: Request, workshop_id: int) -> Response:
        return Response(WorkshopSerializer(_workshop(request, workshop_id)).data)

    @extend_schema(
        request=WorkshopUpdateSerializer,
        responses={200: WorkshopSerializer, **WORKSHOP_ERRORS},
        summary="Change the title, the window, seats, session length, who may join",
        description="Only the fields sent change. More seats must fit the quota (429); "
        "never fewer than are taken (400). A closed workshop: 410 `WORKSHOP_CLOSED`.",
    )
    def patch(self, request: Request, workshop_id: int) -> Response:
        workshop = _workshop(request, workshop_id)
        serializer = WorkshopUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)  # partial: only the fields sent
        workshop = services.update_workshop(current_user(request), workshop, changes)
        return Response(WorkshopSerializer(workshop).data)


class WorkshopCloseView(APIView):
    @extend_schema(request=None, responses={200: WorkshopSerializer, **WORKSHOP_ERRORS},
                   summary="Close now: every seated session is stopped")  # fmt: skip
    def post(self, request: Request, workshop_id: int) -> Response:
        workshop = services.close_workshop(current_user(request), _workshop(request, workshop_id))
        return Response(WorkshopSerializer(workshop).data)


class WorkshopRotateCodeView(APIView):
    @extend_schema(request=None, responses={200: WorkshopSerializer, **WORKSHOP_ERRORS},
                   summary="A new join code; the old one stops working (seats kept)")  # fmt: skip
    def post(self, request: Request, workshop_id: int) -> Response:
        workshop = services.rotate_code(current_user(request), _workshop(request, workshop_id))
        return Response(WorkshopSerializer(workshop).data)


class WorkshopUpdateEnvironmentView(APIView):
    @extend_schema(request=None, responses={202: WorkshopSerializer, **WORKSHOP_ERRORS},
                   summary="Pin the latest commit of the ref and build it ahead")  # fmt: skip
    def post(self, request: Request, workshop_id: int) -> Response:
        workshop = services.update_environment(
            current_user(request), _workshop(request, workshop_id)
        )
        return Response(WorkshopSerializer(workshop).data, status=status.HTTP_202_ACCEPTED)


class WorkshopStopAllView(APIView):
    @extend_schema(request=None, responses={200: StopAllSerializer, **WORKSHOP_ERRORS},
                   summary="Stop every attendee's session (seats are kept)")  # fmt: skip
    def post(self, request: Request, workshop_id: int) -> Response:
        stopped = services.stop_all(current_user(request), _workshop(request, workshop_id))
        return Response({"stopped": stopped})


class RosterView(APIView):
    @extend_schema(responses=SeatSerializer(many=True),
                   summary="Attendees: name, session, status, activity, memory")  # fmt: skip
    def get(self, request: Request, workshop_id: int) -> Response:
        workshop = _workshop(request, workshop_id)
        paginator = Pagination()
        page = paginator.paginate_queryset(selectors.roster(workshop), request)
        return paginator.get_paginated_response(SeatSerializer(page, many=True).data)


class SeatStopView(APIView):
    @extend_schema(request=None, responses={200: SeatSerializer, **WORKSHOP_ERRORS},
                   summary="Stop one attendee's session (the seat is kept)")  # fmt: skip
    def post(self, request: Request, workshop_id: int, seat_id: int) -> Response:
        workshop = _workshop(request, workshop_id)
        seat = services.stop_seat(current_user(request), workshop,
                                  services.get_seat(workshop, seat_id))  # fmt: skip
        return Response(SeatSerializer(services.get_seat(workshop, seat.pk)).data)


class SeatRestartView(APIView):
    @extend_schema(request=None, responses={200: SeatSerializer, **WORKSHOP_ERRORS},
                   summary="Give an attendee a fresh server (warm when there is one)")  # fmt: skip
    def post(self, request: Request, workshop_id: int, seat_id: int) -> Response:
        workshop = _workshop(request, workshop_id)
        seat = services.restart_seat(current_user(request), workshop,
                                     services.get_seat(workshop, seat_id))  # fmt: skip
        return Response(SeatSerializer(services.get_seat(workshop, seat.pk)).data)


# --- attendees ------------------------------------------------------------------------------


def _was_warm(workshop: Workshop, session: Session) -> bool:
    # warm servers are started under hub users named w<workshop id>-... (services)
    return session.hub_user.startswith(f"w{workshop.pk}-")


def _open_url(session: Session) -> str | None:
    if session.status != Session.Status.READY:
        return None
    url = session.url or sessions.session_url(session)
    separator = "&" if "?" in url else "?"
    return url + separator + urlencode({"token": sessions.session_token(session)})


def _joined_body(
    workshop: Workshop, seat: Seat, session: Session, *, guest_token: str, warm: bool
) -> dict[str, Any]:
    if seat.is_guest:
        status_url = reverse("api-workshop-join-status") + "?" + urlencode({"code": workshop.code})
    else:
        status_url = reverse("api-session", args=[session.pk])
    return JoinedSerializer(
        {
            "session": session,
            "guest_token": guest_token if seat.is_guest else None,
            "seat": {"id": seat.pk, "name": seat.name},
            "workshop": workshop,
            "warm": warm or _was_warm(workshop, session),
            "time_left": services.time_left(workshop, seat),
            "open_url": _open_url(session),
            "status_url": settings.SITE_URL + status_url,
        }
    ).data


def _signed_in(request: Request) -> User | None:
    return request.user if isinstance(request.user, User) else None


JOIN_ERRORS = {
    400: OpenApiResponse(description="VALIDATION_ERROR (a guest gave no name)"),
    401: OpenApiResponse(description="WORKSHOP_SIGN_IN_REQUIRED: no guest seats"),
    403: OpenApiResponse(description="WORKSHOP_NOT_ALLOWED (email domain, team members)"),
    404: OpenApiResponse(description="WORKSHOP_NOT_FOUND: no workshop has this code"),
    409: OpenApiResponse(description="WORKSHOP_FULL, or WORKSHOP_NOT_OPEN (with `opens_at`)"),
    410: OpenApiResponse(description="WORKSHOP_CLOSED"),
    429: OpenApiResponse(description="THROTTLED: too many joins from this address"),
}


class JoinView(APIView):
    permission_classes = [AllowAny]
    throttle_classes = [JoinRateThrottle]

    @extend_schema(
        request=JoinSerializer,
        responses={201: JoinedSerializer, 200: JoinedSerializer, **JOIN_ERRORS},
        summary="Join a workshop by its code: a seat and a server (no account for guests)",
        description="Signed in (a token or the browser's session), you join as yourself; "
        "otherwise as a guest with `name`, when the workshop has guest seats. 201: a seat "
        "taken; 200: the seat you already hold (a guest sends the `guest_token` the first "
        "join returned). `open_url` is null until the server is ready: poll `status_url`.",
    )
    def post(self, request: Request) -> Response:
        serializer = JoinSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = _signed_in(request)
        token = "" if user is not None else data["guest_token"]
        workshop = services.workshop_for_code(data["code"])
        if token and selectors.seat_for_visitor(workshop, None, token) is None:
            # A token that holds no seat here is not taken as a new guest's secret: a client
            # never chooses one (hub user names are drawn from it), the service draws it.
            token = ""
        joined = services.join(data["code"], user=user, name=data["name"], guest_owner=token)
        body = _joined_body(joined.seat.workshop, joined.seat, joined.session,
                            guest_token=joined.guest_owner, warm=joined.warm)  # fmt: skip
        code = status.HTTP_200_OK if joined.rejoined else status.HTTP_201_CREATED
        return Response(body, status=code)


class JoinStatusView(APIView):
    """A guest's poll of their seat. The guest_token is the key: an unknown code and a
    token holding no seat answer the same 404, so this cannot be used to find codes."""

    permission_classes = [AllowAny]

    def _answer(self, request: Request, data: dict[str, Any]) -> Response:
        serializer = JoinStatusQuerySerializer(data=data)
        serializer.is_valid(raise_exception=True)
        token = serializer.validated_data["guest_token"]
        user = None if token else _signed_in(request)
        if not token and user is None:
            raise SeatNotFound("Send the guest_token your join returned.")
        try:
            workshop = services.workshop_for_code(serializer.validated_data["code"])
        except services.WorkshopNotFound:
            raise SeatNotFound() from None
        seat = selectors.seat_for_visitor(workshop, user, token)
        if seat is None or seat.session is None:
            raise SeatNotFound()
        return Response(_joined_body(workshop, seat, seat.session, guest_token=token,
                                     warm=False))  # fmt: skip

    @extend_schema(
        parameters=[
            OpenApiParameter("code", str, required=True, description="The join code."),
            OpenApiParameter("guest_token", str, description="The guest's token."),
        ],
        responses={200: JoinedSerializer,
                   404: OpenApiResponse(description="WORKSHOP_SEAT_NOT_FOUND")},
        summary="A joined guest's seat and server now (poll until `open_url`)",
    )  # fmt: skip
    def get(self, request: Request) -> Response:
        return self._answer(request, request.query_params.dict())

    @extend_schema(
        request=JoinStatusQuerySerializer,
        responses={200: JoinedSerializer,
                   404: OpenApiResponse(description="WORKSHOP_SEAT_NOT_FOUND")},
        summary="The same, the token in the body rather than the URL (kept out of logs)",
    )  # fmt: skip
    def post(self, request: Request) -> Response:
        return self._answer(request, request.data if isinstance(request.data, dict) else {})
