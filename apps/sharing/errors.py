"""The errors of share links, with their stable codes."""

from __future__ import annotations

from portal.errors import BinderyError


class ShareLinkNotFound(BinderyError):
    status = 404
    code = "SHARE_LINK_NOT_FOUND"
    default_message = "No such share link."


class ShareLinkExpired(BinderyError):
    status = 410
    code = "SHARE_LINK_EXPIRED"
    default_message = "This share link has expired. Ask whoever shared it for a new one."


class ShareLinkRevoked(BinderyError):
    status = 410
    code = "SHARE_LINK_REVOKED"
    default_message = "This share link was revoked by whoever shared it."
