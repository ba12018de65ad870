"""Signals other apps listen to, so sessions never import them."""

from __future__ import annotations

from django.dispatch import Signal

# A session's server became ready (sent after the commit): session_id.
session_ready = Signal()
