"""befriend.v1.Contact <-> the plain documents befriend.core.merge works on.

The domain merges contacts as JSON-shaped dicts (``MessageToDict`` with proto field names);
this module is the one place that converts, and it supplies the upload path's ``remerge``.
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf import json_format

from befriend.core import merge
from befriend.v1 import common_pb2

# Contact fields a user or a device edits (the output-only ones excluded).
CONTACT_FIELDS = tuple(
    f.name
    for f in common_pb2.Contact.DESCRIPTOR.fields
    if f.name not in {"name", "etag", "update_time", "device_contact_id"}
)


def to_doc(contact: common_pb2.Contact) -> dict[str, Any]:
    return json_format.MessageToDict(contact, preserving_proto_field_name=True)


def from_doc(doc: dict[str, Any]) -> common_pb2.Contact:
    return json_format.ParseDict(doc, common_pb2.Contact(), ignore_unknown_fields=True)


def changed_fields(old: common_pb2.Contact, new: common_pb2.Contact) -> list[str]:
    return [name for name in CONTACT_FIELDS if getattr(old, name) != getattr(new, name)]


class ProtoCodec:
    """Stored contact bytes <-> engine documents (befriend.server.services.merge.Codec)."""

    def decode(self, data: bytes) -> dict[str, Any]:
        return to_doc(common_pb2.Contact.FromString(data))

    def encode(self, doc: dict[str, Any]) -> bytes:
        return from_doc(doc).SerializeToString(deterministic=True)


CODEC = ProtoCodec()


def remerge(stored: bytes, provenance: Any, uploaded: bytes) -> tuple[bytes, Any, list[str]]:
    """A device re-uploaded an entry: its new version replaces what the device owns; what
    merges and user edits added (recorded in ``provenance``) is kept."""
    old, new = common_pb2.Contact.FromString(stored), common_pb2.Contact.FromString(uploaded)
    if not provenance:
        return uploaded, None, changed_fields(old, new)
    doc, provs, changed = merge.replace_owned(
        to_doc(old),
        merge.provs_from_json(provenance),
        to_doc(new),
        source=merge.Source.DEVICE,
        default=merge.Prov(merge.Source.DEVICE),
        time=int(time.time() * 1_000_000),
    )
    return CODEC.encode(doc), merge.provs_to_json(provs) or None, changed
