"""A tiny frontend on loopback: the page the browser returns to after connecting (``/done``).

It shows the outcome the service put in the query (status, connection id, error) and records every
request, so a test can tell the browser really arrived there.
"""

from __future__ import annotations

import html
import http.server
from urllib.parse import parse_qsl, urlsplit

from tests.support.loopback import LoopbackServer


class ReturnPage(LoopbackServer):
    def __init__(self, path: str = "/done") -> None:
        self.path = path
        self.requests: list[str] = []  # request targets (path and query), in order
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                target = urlsplit(self.path)
                if target.path != owner.path:
                    self.send_error(404)
                    return
                query = dict(parse_qsl(target.query, keep_blank_values=True))
                status = query.get("status", "unknown")
                rows = "".join(
                    f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
                    for name, value in sorted(query.items())
                )
                body = (
                    "<!doctype html><html lang=en><meta charset=utf-8><title>Connections</title>"
                    "<body style='font-family:sans-serif;margin:3em'>"
                    f"<h1 id=status>{'Connected' if status == 'connected' else 'Not connected'}</h1>"
                    f"<table>{rows}</table></body></html>"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._serve(Handler, "return-page")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"
