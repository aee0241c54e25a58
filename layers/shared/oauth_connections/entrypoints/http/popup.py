"""The page the callback answers when the sign-in ran in a popup.

It tells the window that opened it how the sign-in ended, with `postMessage` to exactly the origin of
the flow's return URL (never "*"), and closes itself; without an opener it goes to the return URL like
a full-page flow would. The message carries the outcome only: no code, no token, no state. The one
script runs under a strict CSP with a fresh nonce; the data it posts sits in a JSON block, not in a URL.
"""

from __future__ import annotations

import html
import json
import secrets
from typing import Any
from urllib.parse import urlsplit

MESSAGE_TYPE = "oauth_connection"

_SCRIPT = (
    "(function(){"
    "var data=JSON.parse(document.getElementById('oauth-result').textContent);"
    "if(window.opener&&!window.opener.closed){"
    "window.opener.postMessage(data.message,data.target_origin);window.close();}"
    "else{window.location.replace(data.return_url);}"
    "})();"
)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def popup_message(
    status: str, connection_id: str | None, error: str | None = None, error_description: str | None = None
) -> dict[str, Any]:
    return {
        "type": MESSAGE_TYPE,
        "status": status,
        "connection_id": connection_id,
        "error": error,
        "error_description": error_description,
    }


def _json_block(value: Any) -> str:
    """JSON safe inside a <script type=application/json> element (no closing tag, no comment start)."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def popup_page(message: dict[str, Any], return_url: str) -> tuple[str, dict[str, str]]:
    """The HTML and the headers (CSP with this answer's nonce) of the popup's last page."""
    nonce = secrets.token_urlsafe(18)
    data = {"message": message, "target_origin": origin_of(return_url), "return_url": return_url}
    connected = message["status"] == "connected"
    title = "Connected" if connected else "Connection failed"
    detail = "You can close this window." if connected else html.escape(message.get("error_description") or "")
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{title}</title>"
        f"<style nonce={nonce}>body{{font-family:sans-serif;max-width:40em;margin:4em auto}}</style>"
        f"<h1>{title}</h1><p>{detail}</p>"
        f'<p><a href="{html.escape(return_url)}">Back to the app</a></p>'
        f"<script type=application/json id=oauth-result>{_json_block(data)}</script>"
        f"<script nonce={nonce}>{_SCRIPT}</script></html>"
    )
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return body, {"Content-Security-Policy": csp}
