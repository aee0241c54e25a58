"""One cursor codec for every list of the API: the cursor is the id a page continues after."""

from __future__ import annotations

import base64
import binascii

from oauth_connections.core.errors import (
    InvalidRequestError,
)
from oauth_connections.core.ids import is_id


def encode_cursor(connection_id: str) -> str:
    return base64.urlsafe_b64encode(connection_id.encode()).decode().rstrip("=")


def decode_cursor_of(cursor: str, prefix: str) -> str:
    """The id a page cursor continues after; only ids of the expected kind are accepted."""
    try:
        item_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise InvalidRequestError("invalid cursor", code="invalid_cursor") from error
    if not is_id(item_id, prefix):
        raise InvalidRequestError("invalid cursor", code="invalid_cursor")
    return item_id
