from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.builds import selectors, services
from apps.builds.api.serializers import BuildCreateSerializer, BuildSerializer, LogLineSerializer
from apps.builds.logs import line_payload
from apps.builds.streams import follow_build
from portal.api import Pagination, current_user
from portal.errors import BinderyError
from portal.streaming import TokenRejected, authenticate, event_stream, sse
from portal.utils import to_int


class BuildListView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("mine", bool, description="Only builds I started."),
            OpenApiParameter("repo", str, description="Only builds of this repository URL."),
            OpenApiParameter("status", str, description="pending, running, ready, failed..."),
        ],
        responses=BuildSerializer(many=True),
        summary="Builds I can see",
    )
    def get(self, request: Request) -> Response:
        builds = selectors.visible_builds(request.user)
        params = request.query_params
        if params.get("mine") in ("1", "true"):
            builds = builds.filter(requested_by=current_user(request))
        if params.get("repo"):
            builds = builds.filter(repo_url=params["repo"])
        if params.get("status"):
            builds = builds.filter(status=params["status"])
        paginator = Pagination()
        page = paginator.paginate_queryset(builds, request)
        data = BuildSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)

    @extend_schema(
        request=BuildCreateSerializer,
        responses={201: BuildSerializer, 200: BuildSerializer},
        summary="Build a repository (201: a new build; 200: an existing ready or running one)",
    )
    def post(self, request: Request) -> Response:
        serializer = BuildCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        requested = services.build_from_input(current_user(request), **serializer.validated_data)
        body = BuildSerializer(requested.build, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED if requested.created else 200)


class BuildDetailView(APIView):
    @extend_schema(responses=BuildSerializer, summary="A build, with its receipt when ready")
    def get(self, request: Request, build_id: int) -> Response:
        build = selectors.get_build_for_user(request.user, build_id)
        return Response(BuildSerializer(build, context={"request": request}).data)


class BuildCancelView(APIView):
    @extend_schema(request=None, responses={202: BuildSerializer}, summary="Cancel a build")
    def post(self, request: Request, build_id: int) -> Response:
        build = selectors.get_build_for_user(request.user, build_id)
        build = services.cancel_build(current_user(request), build)
        body = BuildSerializer(build, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED)


class BuildLogView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="Only lines numbered after this."),
            OpenApiParameter("limit", int, description="At most this many lines (≤ 5000)."),
        ],
        responses=LogLineSerializer(many=True),
        summary="Stored log lines of a build (follow live at `events`)",
    )
    def get(self, request: Request, build_id: int) -> Response:
        build = selectors.get_build_for_user(request.user, build_id)
        after = to_int(request.query_params.get("after"), 0)
        limit = min(max(to_int(request.query_params.get("limit"), 1000), 1), 5000)
        lines = [line_payload(line) for line in selectors.log_lines(build, after, limit)]
        return Response(
            {"build": build.pk, "status": build.status, "log_size": build.log_size,
             "lines": lines, "next_after": lines[-1]["n"] if lines else after}
        )  # fmt: skip


async def build_events(request: HttpRequest, build_id: int) -> HttpResponseBase:
    """``text/event-stream`` of a build: ``status`` and ``log`` events (``id`` = line number,
    so a reconnecting client resumes with Last-Event-ID), ``:keepalive`` comments."""
    try:
        user = await authenticate(request)
    except TokenRejected as exc:
        return JsonResponse(exc.as_dict(), status=exc.status)
    if not user.is_authenticated and not await database_sync_to_async(_anonymous_allowed)():
        return JsonResponse(
            {"error": "NOT_AUTHENTICATED", "detail": "Sign in or send an API token."}, status=401
        )
    try:
        build = await database_sync_to_async(selectors.get_build_for_user)(user, build_id)
    except BinderyError as exc:
        return JsonResponse(exc.as_dict(), status=exc.status)
    after = to_int(request.headers.get("Last-Event-ID") or request.GET.get("after"), 0)

    async def body() -> Any:
        async for event in follow_build(build.pk, after, keepalive=15.0):
            kind = event.pop("kind")
            if kind == "keepalive":
                yield ":keepalive\n\n"
            elif kind == "log":
                for line in event["lines"]:
                    yield sse(line, event="log", id=line["n"])
            else:
                yield sse(event, event=kind)

    return event_stream(body())


def _anonymous_allowed() -> bool:
    from django.conf import settings

    return bool(settings.BINDERY_ANONYMOUS_LAUNCH)
