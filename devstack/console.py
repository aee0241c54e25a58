"""The Connections console on the local stack: its static files, its settings, and a local sign-in.

``console/`` is served as it is (no build step). ``/config.json`` tells the page where the API is and
that this is the local stack; ``POST /dev-token`` is the local sign-in: it mints a development token
for the tenant and user typed in (read-only or manage). It exists only here, never in the template.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack.httpserver import BodyTooLarge, LocalServer, RequestHandler

CONSOLE_DIR_NAME = "console"
_STATIC_SUFFIXES = {".html", ".js", ".css", ".svg"}
_TOKEN_BODY_LIMIT = 4096
_NAME_LIMIT = 128
_SECURITY_HEADERS = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
]

#: (tenant, user, read_only) -> bearer token
TokenMinter = Callable[[str, str, bool], str]


class ConsoleServer(LocalServer):
    def __init__(self, port: int) -> None:
        super().__init__(port, _Handler)
        self.root: Path = Path()
        self.api_url = ""
        self.settings: dict[str, Any] = {}
        self.minter: TokenMinter | None = None

    def configure(self, root: Path, api_url: str, settings: dict[str, Any], minter: TokenMinter) -> None:
        """``settings``: what the page reads from /config.json besides the API's address."""
        self.root = root.resolve()
        self.api_url = api_url
        self.settings = {"api_url": api_url, "local_sign_in": True, **settings}
        self.minter = minter

    def content_security_policy(self) -> str:
        return (
            f"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self' {self.api_url}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )


class _Handler(RequestHandler):
    server: ConsoleServer

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/config.json":
            self._json(200, self.server.settings)
            return
        relative = "index.html" if path in ("/", "") else path.lstrip("/")
        target = (self.server.root / relative).resolve()
        if (
            not target.is_relative_to(self.server.root)
            or target.suffix not in _STATIC_SUFFIXES
            or "node_modules" in target.parts
            or not target.is_file()
        ):
            self._json(404, {"message": "Not Found"})
            return
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".js":
            content_type = "text/javascript"
        headers = [("content-type", f"{content_type}; charset=utf-8"), *_SECURITY_HEADERS]
        if target.suffix == ".html":
            headers.append(("content-security-policy", self.server.content_security_policy()))
        self.respond(200, target.read_bytes(), headers, head_only=self.command == "HEAD")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if self.path != "/dev-token":
            self._json(404, {"message": "Not Found"})
            return
        # Only the console's own pages may sign in: a JSON body from another origin needs a preflight,
        # which this server never answers, and a form post from one carries its Origin.
        if self.headers.get("Origin") != self.server.url or not self.headers.get("Content-Type", "").startswith(
            "application/json"
        ):
            self._json(403, {"message": "Forbidden"})
            return
        try:
            request = json.loads(self.read_body(_TOKEN_BODY_LIMIT) or b"{}")
        except (BodyTooLarge, ValueError):
            self._json(400, {"message": "Bad Request"})
            return
        fields = request if isinstance(request, dict) else {}
        tenant, user, read_only = fields.get("tenant"), fields.get("user"), fields.get("read_only")
        if not (_valid_name(tenant) and _valid_name(user) and isinstance(read_only, bool)):
            self._json(400, {"message": "tenant and user (1-128 characters) and read_only (true/false) are required"})
            return
        assert self.server.minter is not None and isinstance(tenant, str) and isinstance(user, str)
        self._json(200, {"token": self.server.minter(tenant, user, read_only)})

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self.respond(status, json.dumps(body).encode(), [("content-type", "application/json"), *_SECURITY_HEADERS])


def _valid_name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _NAME_LIMIT and value.isprintable() and "#" not in value
