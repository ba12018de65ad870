from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.repos import selectors, services
from apps.repos.api.serializers import CredentialCreateSerializer, CredentialSerializer
from apps.teams.selectors import get_membership_for_user
from portal.api import Pagination, current_user


def _no_store(response: Response) -> Response:
    response["Cache-Control"] = "no-store"
    return response


class CredentialListView(APIView):
    @extend_schema(
        responses=CredentialSerializer(many=True),
        summary="Credentials I can use: mine and my teams' (never the secrets)",
    )
    def get(self, request: Request) -> Response:
        user = current_user(request)
        paginator = Pagination()
        page = paginator.paginate_queryset(selectors.credentials_for_user(user), request)
        context = {"roles": selectors.team_roles(user)}
        data = CredentialSerializer(page, many=True, context=context).data
        return _no_store(paginator.get_paginated_response(data))

    @extend_schema(
        request=CredentialCreateSerializer,
        responses={201: CredentialSerializer},
        summary="Store a credential for a git host (yours, or a team's as its owner/admin)",
    )
    def post(self, request: Request) -> Response:
        user = current_user(request)
        serializer = CredentialCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        slug = data.pop("team", "")
        membership = get_membership_for_user(user, slug) if slug else None
        team = membership.team if membership else None
        credential = services.create_credential(user, team=team, **data)
        roles = {membership.team_id: membership.role} if membership else {}
        body = CredentialSerializer(credential, context={"roles": roles}).data
        return _no_store(Response(body, status=status.HTTP_201_CREATED))


class CredentialDetailView(APIView):
    @extend_schema(responses=CredentialSerializer, summary="One credential I can use")
    def get(self, request: Request, credential_id: int) -> Response:
        user = current_user(request)
        credential = selectors.get_credential_for_user(user, credential_id)
        context = {"roles": selectors.team_roles(user)}
        return _no_store(Response(CredentialSerializer(credential, context=context).data))

    @extend_schema(
        responses={204: None},
        summary="Delete a credential (yours, or your team's as its owner/admin)",
    )
    def delete(self, request: Request, credential_id: int) -> Response:
        user = current_user(request)
        services.delete_credential(user, selectors.get_credential_for_user(user, credential_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
