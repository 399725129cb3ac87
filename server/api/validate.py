"""Envelope checks of protobuf messages: sizes and ranges, naming the offending field."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

MAX_STRING_CHARS = 4096
MAX_REPEATED = 200


def oversized(message: Message, prefix: str) -> tuple[str, str] | None:
    """The first string field longer than MAX_STRING_CHARS or list longer than
    MAX_REPEATED, as (field path, description); None when all fit."""
    for fd, value in message.ListFields():
        path = f"{prefix}.{fd.name}" if prefix else fd.name
        repeated = fd.is_repeated
        items = list(value) if repeated else [value]
        if repeated and len(items) > MAX_REPEATED:
            return path, f"{len(items)} items; at most {MAX_REPEATED}"
        for i, item in enumerate(items):
            item_path = f"{path}[{i}]" if repeated else path
            if fd.type == FieldDescriptor.TYPE_STRING and len(item) > MAX_STRING_CHARS:
                return item_path, f"{len(item)} characters; at most {MAX_STRING_CHARS}"
            if fd.type == FieldDescriptor.TYPE_MESSAGE:
                found = oversized(item, item_path)
                if found is not None:
                    return found
    return None


def date_problem(year: int, month: int, day: int, path: str) -> tuple[str, str] | None:
    """A calendar date with year 0 meaning unknown; all zero means unset."""
    if (year, month, day) == (0, 0, 0):
        return None
    if not 0 <= year <= 9999:
        return f"{path}.year", "must be 0 (unknown) or 1-9999"
    if not 1 <= month <= 12:
        return f"{path}.month", "must be 1-12"
    if not 1 <= day <= 31:
        return f"{path}.day", "must be 1-31"
    return None
