"""SECURITY.md maps every threat to tests: the tests it names must exist."""

from __future__ import annotations

import re

from tests.conftest import REPO


def test_every_named_test_exists() -> None:
    text = (REPO / "SECURITY.md").read_text()
    checked = 0
    for line in text.splitlines():
        if not line.startswith("| T"):
            continue
        current: str | None = None
        for match in re.finditer(r"`((?:clients/python/)?tests/[\w/]+\.py)(?:::(\w+))?|`::(\w+)", line):
            path, name, short = match.groups()
            if path:
                current = path
                assert (REPO / path).is_file(), path
            name = name or short
            if name:
                assert current, line
                assert f"def {name}(" in (REPO / current).read_text(), f"{current}::{name}"
                checked += 1
    assert checked >= 25
