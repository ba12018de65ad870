from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.teams import selectors, services
from apps.teams.api.serializers import (
    AcceptSerializer,
    InvitationCreatedSerializer,
    InvitationCreateSerializer,
    InvitationSerializer,
    MembershipSerializer,
    RoleSerializer,
    TeamCreateSerializer,
    TeamSerializer,
    TeamUpdateSerializer,
)
from apps.teams.models import Invitation, Team
from portal.api import Pagination, current_user


def _team_data(team: Team, role: str) -> dict[str, object]:
    return dict(TeamSerializer(team, context={"roles": {team.pk: role}}).data)


class TeamListView(APIView):
    @extend_schema(responses=TeamSerializer(many=True), summary="Teams I belong to")
    def get(self, request: Request) -> Response:
        memberships = selectors.memberships_for_user(current_user(request))
        paginator = Pagination()
        page = paginator.paginate_queryset(memberships, request) or []
        roles = {m.team_id: m.role for m in page}
        data = TeamSerializer([m.team for m in page], many=True, context={"roles": roles}).data
        return paginator.get_paginated_response(data)

    @extend_schema(
        request=TeamCreateSerializer,
        responses={201: TeamSerializer},
        summary="Create a team (you become its owner)",
    )
    def post(self, request: Request) -> Response:
        serializer = TeamCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        team = services.create_team(current_user(request), **serializer.validated_data)
        return Response(_team_data(team, "owner"), status=status.HTTP_201_CREATED)


class TeamDetailView(APIView):
    @extend_schema(responses=TeamSerializer, summary="A team I belong to")
    def get(self, request: Request, slug: str) -> Response:
        membership = selectors.get_membership_for_user(current_user(request), slug)
        return Response(_team_data(membership.team, membership.role))

    @extend_schema(
        request=TeamUpdateSerializer,
        responses=TeamSerializer,
        summary="Rename a team (owner, admin)",
    )
    def patch(self, request: Request, slug: str) -> Response:
        membership = selectors.get_membership_for_user(current_user(request), slug)
        serializer = TeamUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.update_team(membership, serializer.validated_data["name"])
        return Response(_team_data(membership.team, membership.role))

    @extend_schema(responses={204: None}, summary="Delete a team (owner)")
    def delete(self, request: Request, slug: str) -> Response:
        services.delete_team(selectors.get_membership_for_user(current_user(request), slug))
        return Response(status=status.HTTP_204_NO_CONTENT)


class LeaveView(APIView):
    @extend_schema(request=None, responses={204: None}, summary="Leave a team")
    def post(self, request: Request, slug: str) -> Response:
        services.leave_team(selectors.get_membership_for_user(current_user(request), slug))
        return Response(status=status.HTTP_204_NO_CONTENT)


class MembershipListView(APIView):
    @extend_schema(responses=MembershipSerializer(many=True), summary="Members of a team")
    def get(self, request: Request, slug: str) -> Response:
        membership = selectors.get_membership_for_user(current_user(request), slug)
        paginator = Pagination()
        page = paginator.paginate_queryset(selectors.members_of(membership.team), request)
        return paginator.get_paginated_response(MembershipSerializer(page, many=True).data)


class MembershipDetailView(APIView):
    @extend_schema(responses=MembershipSerializer, summary="One member of a team")
    def get(self, request: Request, slug: str, membership_id: int) -> Response:
        actor = selectors.get_membership_for_user(current_user(request), slug)
        return Response(MembershipSerializer(selectors.get_member(actor, membership_id)).data)

    @extend_schema(
        request=RoleSerializer, responses=MembershipSerializer, summary="Change a member's role"
    )
    def patch(self, request: Request, slug: str, membership_id: int) -> Response:
        actor = selectors.get_membership_for_user(current_user(request), slug)
        target = selectors.get_member(actor, membership_id)
        serializer = RoleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        target = services.change_role(actor, target, serializer.validated_data["role"])
        return Response(MembershipSerializer(target).data)

    @extend_schema(responses={204: None}, summary="Remove a member (yourself: leave)")
    def delete(self, request: Request, slug: str, membership_id: int) -> Response:
        actor = selectors.get_membership_for_user(current_user(request), slug)
        services.remove_member(actor, selectors.get_member(actor, membership_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationListView(APIView):
    @extend_schema(
        responses=InvitationSerializer(many=True), summary="A team's invitations (owner, admin)"
    )
    def get(self, request: Request, slug: str) -> Response:
        actor = selectors.get_membership_for_user(current_user(request), slug)
        paginator = Pagination()
        page = paginator.paginate_queryset(selectors.invitations_for(actor), request)
        return paginator.get_paginated_response(InvitationSerializer(page, many=True).data)

    @extend_schema(
        request=InvitationCreateSerializer,
        responses={201: InvitationCreatedSerializer},
        summary="Invite by email, or create an invite link (owner, admin)",
    )
    def post(self, request: Request, slug: str) -> Response:
        actor = selectors.get_membership_for_user(current_user(request), slug)
        serializer = InvitationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if data["kind"] == Invitation.Kind.EMAIL:
            issued = services.invite_by_email(actor, data["email"], data["role"])
        else:
            issued = services.create_invite_link(
                actor, data["role"], data["days"], data.get("max_uses")
            )
        body = {**InvitationSerializer(issued.invitation).data, "url": issued.url}
        response = Response(body, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response


class InvitationDetailView(APIView):
    @extend_schema(responses={204: None}, summary="Revoke an invitation (owner, admin)")
    def delete(self, request: Request, slug: str, invitation_id: int) -> Response:
        actor = selectors.get_membership_for_user(current_user(request), slug)
        services.revoke_invitation(actor, selectors.get_invitation(actor, invitation_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class AcceptInvitationView(APIView):
    @extend_schema(
        request=AcceptSerializer,
        responses=TeamSerializer,
        summary="Accept an invitation (the token from its URL)",
    )
    def post(self, request: Request) -> Response:
        serializer = AcceptSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.accept_invitation(
            current_user(request), serializer.validated_data["token"]
        )
        return Response(_team_data(membership.team, membership.role))
