"""A local landing page for return URLs: where the browser ends after connecting on ``make run``.

The service sends the browser back to the frontend's return URL with the outcome in the query
(``status=connected&connection_id=...`` or ``status=error&error=...&error_description=...``). Locally
there is no frontend, so this page stands in for it and says what happened. Anyone can put anything in
that query, so every value shown is HTML-escaped and the page runs no script (its CSP allows none).
"""

from __future__ import annotations

import html
import urllib.parse

from devstack.httpserver import LocalServer, RequestHandler

PATH = "/connected"
_HEADERS = [
    ("content-type", "text/html; charset=utf-8"),
    ("cache-control", "no-store"),
    ("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
]
_STYLE = (
    "body{font-family:sans-serif;max-width:40em;margin:4em auto;line-height:1.5}code{background:#eee;padding:0 .2em}"
)


class ReturnPage(LocalServer):
    def __init__(self, port: int) -> None:
        super().__init__(port, _Handler)

    @property
    def page_url(self) -> str:
        return self.url + PATH


def render(query: str) -> str:
    """The page for a return URL's query string (values escaped; unknown parameters ignored)."""
    values = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    status = values.get("status", "")
    if status == "connected":
        title = "Connected"
        connection = html.escape(values.get("connection_id", ""))
        detail = f"<p>The connection <code id=connection>{connection}</code> is connected.</p>"
    elif status == "error":
        title = "Connection failed"
        code = html.escape(values.get("error", "unknown_error"))
        description = html.escape(values.get("error_description", ""))
        detail = f"<p>Error <code id=error>{code}</code></p><p id=description>{description}</p>"
    else:
        title = "No outcome"
        detail = "<p>This page shows the outcome of a connection; the service sends the browser here.</p>"
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{title}</title><style>{_STYLE}</style>"
        f"<body><h1 id=status>{title}</h1>{detail}"
        "<p><small>Local stand-in for the frontend's return URL (<code>make run</code>).</small></p></body></html>"
    )


class _Handler(RequestHandler):
    server: ReturnPage

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path != PATH:
            self.respond(404, b"not found", [("content-type", "text/plain; charset=utf-8")])
            return
        self.respond(200, render(query).encode(), _HEADERS, head_only=self.command == "HEAD")

    do_HEAD = do_GET
