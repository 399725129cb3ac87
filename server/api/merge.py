"""SyncService, merge half: seed 000's two-way merge between a device book and a network
source (preview, plan items, apply, undo)."""

from __future__ import annotations

from befriend.server.api.backend import Backend


class MergeApi:
    """SyncService merge RPCs; mixed into befriend.server.api.sync.SyncServicer."""

    backend: Backend
