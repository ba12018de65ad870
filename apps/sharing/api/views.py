from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.sessions.api.serializers import SessionSerializer
from apps.sessions.selectors import get_session_for_user
from apps.sharing import selectors, services
from apps.sharing.api.serializers import (
    ShareLaunchSerializer,
    ShareLinkCreatedSerializer,
    ShareLinkCreateSerializer,
    ShareLinkSerializer,
    TeamEnvironmentInputSerializer,
    TeamEnvironmentSerializer,
)
from apps.teams.selectors import get_membership_for_user
from portal.api import Pagination, current_user


def _session_created(session: Any) -> Response:
    return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)


class TeamEnvironmentListView(APIView):
    @extend_schema(
        responses=TeamEnvironmentSerializer(many=True), summary="A team's environments (members)"
    )
    def get(self, request: Request, slug: str) -> Response:
        membership = get_membership_for_user(current_user(request), slug)
        paginator = Pagination()
        page = paginator.paginate_queryset(selectors.environments_of(membership), request)
        return paginator.get_paginated_response(TeamEnvironmentSerializer(page, many=True).data)

    @extend_schema(
        request=TeamEnvironmentInputSerializer,
        responses={201: TeamEnvironmentSerializer},
        summary="Add an environment to a team (owner, admin); resolved now",
    )
    def post(self, request: Request, slug: str) -> Response:
        membership = get_membership_for_user(current_user(request), slug)
        serializer = TeamEnvironmentInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        environment = services.create_team_environment(membership, **serializer.validated_data)
        return Response(TeamEnvironmentSerializer(environment).data, status=status.HTTP_201_CREATED)


class TeamEnvironmentDetailView(APIView):
    @extend_schema(responses=TeamEnvironmentSerializer, summary="One of a team's environments")
    def get(self, request: Request, slug: str, environment_id: int) -> Response:
        _, environment = selectors.get_environment_for_user(
            current_user(request), slug, environment_id
        )
        return Response(TeamEnvironmentSerializer(environment).data)

    def _update(self, request: Request, slug: str, environment_id: int, partial: bool) -> Response:
        membership, environment = selectors.get_environment_for_user(
            current_user(request), slug, environment_id
        )
        serializer = TeamEnvironmentInputSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        if not partial:  # a PUT replaces: what it leaves out goes back to its default
            changes = {"follow_branch": True, "urlpath": "", "cpu": None,
                       "memory_bytes": None, **changes}  # fmt: skip
        environment = services.update_team_environment(membership, environment, changes)
        return Response(TeamEnvironmentSerializer(environment).data)

    @extend_schema(
        request=TeamEnvironmentInputSerializer,
        responses=TeamEnvironmentSerializer,
        summary="Change some of an environment's fields (owner, admin)",
    )
    def patch(self, request: Request, slug: str, environment_id: int) -> Response:
        return self._update(request, slug, environment_id, partial=True)

    @extend_schema(
        request=TeamEnvironmentInputSerializer,
        responses=TeamEnvironmentSerializer,
        summary="Replace an environment (owner, admin)",
    )
    def put(self, request: Request, slug: str, environment_id: int) -> Response:
        return self._update(request, slug, environment_id, partial=False)

    @extend_schema(responses={204: None}, summary="Remove an environment (owner, admin)")
    def delete(self, request: Request, slug: str, environment_id: int) -> Response:
        membership, environment = selectors.get_environment_for_user(
            current_user(request), slug, environment_id
        )
        services.delete_team_environment(membership, environment)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TeamEnvironmentLaunchView(APIView):
    @extend_schema(
        request=None,
        responses={201: SessionSerializer},
        summary="Launch a team environment (members): a team launch, the team's quota",
    )
    def post(self, request: Request, slug: str, environment_id: int) -> Response:
        membership, environment = selectors.get_environment_for_user(
            current_user(request), slug, environment_id
        )
        return _session_created(services.launch_team_environment(membership, environment))


class ShareLinkListView(APIView):
    @extend_schema(responses=ShareLinkSerializer(many=True), summary="The share links I made")
    def get(self, request: Request) -> Response:
        paginator = Pagination()
        page = paginator.paginate_queryset(
            selectors.share_links_for(current_user(request)), request
        )
        return paginator.get_paginated_response(ShareLinkSerializer(page, many=True).data)

    @extend_schema(
        request=ShareLinkCreateSerializer,
        responses={201: ShareLinkCreatedSerializer},
        summary="Share an environment by link (the secret is in this response only)",
    )
    def post(self, request: Request) -> Response:
        user = current_user(request)
        serializer = ShareLinkCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        team_slug = data.pop("team", "")
        team = get_membership_for_user(user, team_slug).team if team_slug else None
        session_id = data.pop("session", None)
        if session_id is not None:
            session = get_session_for_user(user, session_id)
            data["spec"] = f"{session.provider}/{session.spec}"
            data.setdefault("urlpath", session.urlpath)
        issued = services.create_share_link(user, team=team, **data)
        body = {**ShareLinkSerializer(issued.link).data, "token": issued.token, "url": issued.url}
        response = Response(body, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response


class ShareLinkDetailView(APIView):
    @extend_schema(responses=ShareLinkSerializer, summary="A share link I made")
    def get(self, request: Request, link_id: int) -> Response:
        link = selectors.get_share_link_for_user(current_user(request), link_id)
        return Response(ShareLinkSerializer(link).data)

    @extend_schema(responses={204: None}, summary="Revoke a share link I made (it answers 410)")
    def delete(self, request: Request, link_id: int) -> Response:
        user = current_user(request)
        services.revoke_share_link(user, selectors.get_share_link_for_user(user, link_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ShareLinkLaunchView(APIView):
    @extend_schema(
        request=ShareLaunchSerializer,
        responses={201: SessionSerializer},
        summary="Launch a shared environment: your own quota and credentials (a team link: "
        "a team launch of that team)",
    )
    def post(self, request: Request) -> Response:
        user = current_user(request)
        serializer = ShareLaunchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        link = selectors.get_share_link_by_token(user, serializer.validated_data["token"])
        return _session_created(services.launch_share_link(user, link))
