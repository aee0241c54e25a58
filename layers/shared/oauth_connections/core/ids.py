"""Identifiers: time-ordered (so lists come in creation order) and unguessable (80 random bits)."""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
CONNECTION_ID_PREFIX = "con"
FEED_ID_PREFIX = "feed"
ACTIVITY_ID_PREFIX = "act"
# What a tenant id may look like (it comes from the authorizer's claims or a trusted caller).
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9._:@\-]{1,128}$")


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, index = divmod(value, 32)
        chars.append(_ALPHABET[index])
    return "".join(reversed(chars))


def new_id(prefix: str, at: datetime | None = None) -> str:
    """A new id; `at` makes it at that moment (an entry whose time is a key range must carry its own time)."""
    millis = int(at.timestamp() * 1000) if at else time.time_ns() // 1_000_000
    stamp = _base32(millis, 10)
    return f"{prefix}_{stamp}{_base32(secrets.randbits(80), 16)}"


def is_id(value: str, prefix: str) -> bool:
    body = value.removeprefix(f"{prefix}_")
    return body != value and len(body) == 26 and all(c in _ALPHABET for c in body)


def id_bound(prefix: str, moment: datetime, *, upper: bool) -> str:
    """The lowest (or highest) id of the given kind made at that millisecond: a time range as an id range."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # a time without a zone is UTC
    stamp = _base32(min(max(int(aware.timestamp() * 1000), 0), 32**10 - 1), 10)
    return f"{prefix}_{stamp}{(_ALPHABET[-1] if upper else _ALPHABET[0]) * 16}"
