from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts import selectors, services
from apps.accounts.api.serializers import (
    MeSerializer,
    TokenCreatedSerializer,
    TokenCreateSerializer,
    TokenSerializer,
)
from portal.api import Pagination, current_user


class MeView(APIView):
    @extend_schema(responses=MeSerializer, summary="The authenticated user")
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(current_user(request)).data)

    @extend_schema(request=MeSerializer, responses=MeSerializer, summary="Update my name")
    def patch(self, request: Request) -> Response:
        serializer = MeSerializer(current_user(request), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        serializer.save()
        return Response(serializer.data)


class TokenListView(APIView):
    @extend_schema(responses=TokenSerializer(many=True), summary="List my API tokens")
    def get(self, request: Request) -> Response:
        paginator = Pagination()
        page = paginator.paginate_queryset(
            selectors.tokens_for_user(current_user(request)), request
        )
        return paginator.get_paginated_response(TokenSerializer(page, many=True).data)

    @extend_schema(
        request=TokenCreateSerializer,
        responses={201: TokenCreatedSerializer},
        summary="Create an API token (the secret is returned once)",
    )
    def post(self, request: Request) -> Response:
        serializer = TokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = services.create_api_token(current_user(request), **serializer.validated_data)
        body: dict[str, Any] = {**TokenSerializer(issued.token).data, "token": issued.secret}
        response = Response(body, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response


class TokenDetailView(APIView):
    @extend_schema(responses=TokenSerializer, summary="One of my API tokens")
    def get(self, request: Request, token_id: int) -> Response:
        return Response(
            TokenSerializer(selectors.get_token_for_user(current_user(request), token_id)).data
        )

    @extend_schema(responses={204: None}, summary="Revoke an API token")
    def delete(self, request: Request, token_id: int) -> Response:
        services.revoke_api_token(selectors.get_token_for_user(current_user(request), token_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
