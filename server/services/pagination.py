"""Opaque page tokens and page-size rules shared by every List RPC."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from befriend.server.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Page:
    offset: int
    size: int

    def next_token(self, returned: int, scope: str) -> str:
        """Token for the next page, or "" when this page was not full."""
        return encode_token(self.offset + returned, scope) if returned >= self.size else ""


def encode_token(offset: int, scope: str) -> str:
    raw = json.dumps({"o": offset, "s": scope}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def page(page_size: int, page_token: str, scope: str) -> Page:
    """Validate page_size / page_token; a token only works for the listing it came from."""
    if page_size < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if not page_token:
        return Page(0, size)
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset, token_scope = int(data["o"]), str(data["s"])
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument.field("page_token", "malformed page token") from None
    if offset < 0 or token_scope != scope:
        raise InvalidArgument.field("page_token", "page token belongs to another listing")
    return Page(offset, size)
