"""Signals other apps listen to, so builds never import them."""

from __future__ import annotations

from django.dispatch import Signal

# Sent after commit when a build reaches a final status; kwargs: build_id, status.
build_finished = Signal()
