"""befriend.v1.Contact <-> the plain documents befriend.core.merge works on.

The domain merges contacts as JSON-shaped dicts (``MessageToDict`` with proto field names);
this module is the one place that converts, and it supplies the upload path's ``remerge``.
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from befriend.core import merge
from befriend.server.records import EntryKeyRecord
from befriend.server.services.addressbooks import doc_keys
from befriend.v1 import common_pb2

# Contact fields a user or a device edits (the output-only ones excluded).
CONTACT_FIELDS = tuple(
    f.name
    for f in common_pb2.Contact.DESCRIPTOR.fields
    if f.name not in {"name", "etag", "update_time", "device_contact_id"}
)


_SCALAR, _SCALARS, _ENUM, _ENUMS, _MESSAGE, _MESSAGES, _GENERIC = range(7)
# Field types MessageToDict renders differently from their Python value.
_JSON_AS_TEXT = frozenset(
    {
        FieldDescriptor.TYPE_BYTES,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_FLOAT,
        FieldDescriptor.TYPE_DOUBLE,
    }
)
_plans: dict[FieldDescriptor, tuple[int, dict[int, str]]] = {}


def _plan(fd: FieldDescriptor) -> tuple[int, dict[int, str]]:
    if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type is not None:
        if fd.message_type.full_name.startswith("google.protobuf."):
            return _GENERIC, {}
        return (_MESSAGES if fd.is_repeated else _MESSAGE), {}
    if fd.type == FieldDescriptor.TYPE_ENUM and fd.enum_type is not None:
        names = {v.number: v.name for v in fd.enum_type.values}
        return (_ENUMS if fd.is_repeated else _ENUM), names
    if fd.type in _JSON_AS_TEXT:
        return _GENERIC, {}
    return (_SCALARS if fd.is_repeated else _SCALAR), {}


def _message_to_doc(message: Message) -> dict[str, Any]:
    """``MessageToDict(message, preserving_proto_field_name=True)`` for the scalar, enum and
    message fields a Contact has, faster (it runs for every merged contact); any other field
    type falls back to ``MessageToDict``."""
    out: dict[str, Any] = {}
    for fd, value in message.ListFields():
        plan = _plans.get(fd)
        if plan is None:
            plan = _plans[fd] = _plan(fd)
        kind, names = plan
        if kind == _SCALAR:
            out[fd.name] = value
        elif kind == _MESSAGES:
            out[fd.name] = [_message_to_doc(v) for v in value]
        elif kind == _MESSAGE:
            out[fd.name] = _message_to_doc(value)
        elif kind == _ENUM:
            out[fd.name] = names.get(value, value)
        elif kind == _SCALARS:
            out[fd.name] = list(value)
        elif kind == _ENUMS:
            out[fd.name] = [names.get(v, v) for v in value]
        else:
            return json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


def to_doc(contact: common_pb2.Contact) -> dict[str, Any]:
    return _message_to_doc(contact)


def from_doc(doc: dict[str, Any]) -> common_pb2.Contact:
    """The inverse of :func:`to_doc` (``ParseDict``; the keyword constructor when it can)."""
    if "update_time" not in doc:
        try:
            return common_pb2.Contact(**doc)
        except (TypeError, ValueError):
            pass  # an unknown key or an odd value: ParseDict decides
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


def remerge(
    stored: bytes, provenance: Any, uploaded: bytes, region: str
) -> tuple[bytes, Any, list[str], list[EntryKeyRecord] | None]:
    """A device re-uploaded an entry: its new version replaces what the device owns; what
    merges and user edits added (recorded in ``provenance``) is kept, and so are the
    identity keys of kept numbers, e-mails and IM ids."""
    old, new = common_pb2.Contact.FromString(stored), common_pb2.Contact.FromString(uploaded)
    if not provenance:
        return uploaded, None, changed_fields(old, new), None
    doc, provs, changed = merge.replace_owned(
        to_doc(old),
        merge.provs_from_json(provenance),
        to_doc(new),
        source=merge.Source.DEVICE,
        default=merge.Prov(merge.Source.DEVICE),
        time=int(time.time() * 1_000_000),
        region=region,
    )
    return (
        CODEC.encode(doc),
        merge.provs_to_json(provs) or None,
        changed,
        doc_keys([doc], region)[0] if provs else None,
    )
