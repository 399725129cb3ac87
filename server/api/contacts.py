"""SyncService, contacts half: contacts with provenance, user edits, the change feed and
sync settings."""

from __future__ import annotations

from befriend.server.api.backend import Backend


class ContactsApi:
    """SyncService RPCs on single contacts, the change feed and sync settings; mixed into
    befriend.server.api.sync.SyncServicer."""

    backend: Backend
