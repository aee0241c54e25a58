"""The OpenAPI document the document function serves is built at build time (`make openapi`): it must be
the document the routes make as they are now."""

from __future__ import annotations

import json
from pathlib import Path

from oauth_connections.entrypoints.http.openapi import DOCUMENT_PATH, built_document
from oauth_connections.entrypoints.http.openapi_build import build_document, write_document


def test_the_served_document_is_the_one_the_routes_make(tmp_path: Path) -> None:
    written = tmp_path / "openapi.json"
    write_document(written)
    assert written.read_text(encoding="utf-8") == DOCUMENT_PATH.read_text(encoding="utf-8"), (
        "a route or a model changed: run `make openapi`"
    )
    assert built_document() == build_document() == json.loads(written.read_text(encoding="utf-8"))
