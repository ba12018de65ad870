from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.sessions import selectors, services
from apps.sessions.api.serializers import (
    SessionCreateSerializer,
    SessionSerializer,
    TeamSessionSerializer,
    VolumeDeleteSerializer,
    VolumeSerializer,
)
from apps.sessions.models import Session
from apps.sessions.mybinder import mybinder_events
from apps.teams.selectors import get_membership_for_user
from portal.api import Pagination, current_user
from portal.errors import BinderyError
from portal.streaming import TokenRejected, authenticate, event_stream


class SessionListView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("active", bool, description="Only sessions not ended.")],
        responses=SessionSerializer(many=True),
        summary="My sessions, newest first",
    )
    def get(self, request: Request) -> Response:
        sessions = selectors.listed(selectors.sessions_for(request.user))
        if request.query_params.get("active") in ("1", "true"):
            sessions = sessions.filter(status__in=Session.ACTIVE)
        paginator = Pagination()
        page = paginator.paginate_queryset(sessions, request)
        return paginator.get_paginated_response(SessionSerializer(page, many=True).data)

    @extend_schema(
        request=SessionCreateSerializer,
        responses={201: SessionSerializer},
        summary="Launch a repository (returns at once; follow `links.events`)",
    )
    def post(self, request: Request) -> Response:
        serializer = SessionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = current_user(request)
        team = None
        if data.get("team"):
            team = get_membership_for_user(user, data["team"]).team
        urlpath = services.clean_urlpath(data["urlpath"], data["labpath"], data["filepath"])
        session = services.launch(
            user, spec=data.get("spec", ""), repo_url=data.get("repo_url", ""),
            ref=data["ref"], urlpath=urlpath, team=team, cpu=data.get("cpu"),
            memory_bytes=data.get("memory"),
        )  # fmt: skip
        return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)


class SessionDetailView(APIView):
    @extend_schema(responses=SessionSerializer, summary="A session: status, url, phase, error")
    def get(self, request: Request, session_id: int) -> Response:
        session = selectors.get_session_for_user(request.user, session_id)
        return Response(SessionSerializer(session).data)

    @extend_schema(
        responses={202: SessionSerializer},
        summary="Stop a session (yours, or one of a team you own or administer)",
    )
    def delete(self, request: Request, session_id: int) -> Response:
        user = current_user(request)
        session = services.request_stop(selectors.get_session_for_stop(user, session_id), by=user)
        return Response(SessionSerializer(session).data, status=status.HTTP_202_ACCEPTED)


class TeamSessionListView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("active", bool, description="Only sessions not ended.")],
        responses=TeamSessionSerializer(many=True),
        summary="A team's sessions, newest first (owner, admin; never members' personal ones)",
    )
    def get(self, request: Request, slug: str) -> Response:
        actor = get_membership_for_user(current_user(request), slug)
        active_only = request.query_params.get("active") in ("1", "true")
        sessions = selectors.team_sessions_for(actor, active_only=active_only)
        sessions = selectors.listed(sessions, with_user=True)
        paginator = Pagination()
        page = paginator.paginate_queryset(sessions, request)
        return paginator.get_paginated_response(TeamSessionSerializer(page, many=True).data)


class SessionKeepaliveView(APIView):
    @extend_schema(request=None, responses=SessionSerializer,
                   summary="Count as activity: the session is not culled as idle")  # fmt: skip
    def post(self, request: Request, session_id: int) -> Response:
        session = services.keepalive(selectors.get_session_for_user(request.user, session_id))
        return Response(SessionSerializer(session).data)


async def session_events(request: HttpRequest, session_id: int) -> HttpResponseBase:
    """The launch of one session as mybinder's ``data: {phase, message}`` event stream."""
    try:
        user = await authenticate(request)
    except TokenRejected as exc:
        return JsonResponse(exc.as_dict(), status=401)
    if not user.is_authenticated:
        return JsonResponse(
            {"error": "NOT_AUTHENTICATED", "detail": "Sign in or send an API token."}, status=401
        )
    try:
        session = await database_sync_to_async(selectors.get_session_for_user)(user, session_id)
    except BinderyError as exc:
        return JsonResponse(exc.as_dict(), status=exc.status)
    return event_stream(mybinder_events(session))


class VolumeListView(APIView):
    @extend_schema(responses=VolumeSerializer(many=True),
                   summary="My home volume and my teams' volumes")  # fmt: skip
    def get(self, request: Request) -> Response:
        user = current_user(request)
        services.ensure_volumes(user)
        return Response(VolumeSerializer(selectors.volumes_for(user), many=True).data)


class VolumeDetailView(APIView):
    @extend_schema(responses=VolumeSerializer, summary="A volume, its size measured now")
    def get(self, request: Request, volume_id: int) -> Response:
        volume = services.measure_volume(selectors.get_volume_for_user(request.user, volume_id))
        return Response(VolumeSerializer(volume).data)

    @extend_schema(
        request=VolumeDeleteSerializer,
        responses={204: None},
        summary="Delete a volume and everything in it (type its label to confirm)",
    )
    def delete(self, request: Request, volume_id: int) -> Response:
        volume = selectors.get_volume_for_user(request.user, volume_id)
        serializer = VolumeDeleteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.delete_volume(current_user(request), volume, serializer.validated_data["confirm"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class VolumeArchiveView(APIView):
    @extend_schema(responses={(200, "application/gzip"): bytes},
                   summary="Download a volume as a .tar.gz")  # fmt: skip
    def get(self, request: Request, volume_id: int) -> Any:
        volume = selectors.get_volume_for_user(request.user, volume_id)
        name, stream = services.archive_volume(volume)
        response = StreamingHttpResponse(stream, content_type="application/gzip")
        response["Content-Disposition"] = f'attachment; filename="{name}.tar.gz"'
        return response
