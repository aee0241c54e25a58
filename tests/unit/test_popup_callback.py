"""Connect in a popup: the callback's page posts the outcome to the opener, at the return origin only.

Also the flow's lifetimes and cookies as a browser sees them: one binding cookie per flow, and the
state's ten minutes counted from the redirect to the provider.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3

from oauth_connections.core.clock import utcnow
from oauth_connections.entrypoints.http.popup import popup_message, popup_page
from tests.conftest import InProcessApi, Resources
from tests.support.provider import OidcProvider
from tests.support.user_agent import walk_authorization
from tests.unit.flow_helpers import RETURN_URL, callback, create_connection, open_redirect_url, snapshot

RETURN_ORIGIN = "https://app.example.com"


def start_popup(api: InProcessApi, connection_id: str) -> str:
    response = api.call(
        "start_authorization", connection_id=connection_id, body={"return_url": RETURN_URL, "display": "popup"}
    )
    assert response.status == 200, response.text
    return str(response.json()["redirect_url"])


def page_parts(response: Any) -> tuple[str, str, dict[str, Any]]:
    """(CSP, script nonce, posted data) of the popup's page."""
    assert response.status == 200, response.text
    assert response.headers["Content-Type"].startswith("text/html")
    csp = response.headers["Content-Security-Policy"]
    nonces = re.findall(r"<script nonce=([A-Za-z0-9_-]+)>", response.text)
    assert len(nonces) == 1
    block = re.search(r"<script type=application/json id=oauth-result>(.*?)</script>", response.text, re.S)
    assert block is not None
    return csp, nonces[0], json.loads(block.group(1))


def test_a_popup_connect_posts_connected_to_the_return_origin_only(
    flow_api: InProcessApi, provider: OidcProvider, service_env: Resources
) -> None:
    connection = create_connection(flow_api, provider)
    redirect = open_redirect_url(flow_api, start_popup(flow_api, connection["id"]))
    result = walk_authorization(redirect.location)
    response = callback(flow_api, result, redirect.cookie)
    csp, nonce, data = page_parts(response)
    assert f"script-src 'nonce-{nonce}'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert data["target_origin"] == RETURN_ORIGIN
    assert data["message"] == {
        "type": "oauth_connection",
        "status": "connected",
        "connection_id": connection["id"],
        "error": None,
        "error_description": None,
    }
    fallback = urlsplit(data["return_url"])  # where it goes without an opener: the page flow's address
    assert f"{fallback.scheme}://{fallback.netloc}" == RETURN_ORIGIN
    assert parse_qs(fallback.query)["status"] == ["connected"]
    assert result.code and result.code not in response.text
    assert result.state and result.state not in response.text
    assert "access_token" not in response.text and "refresh_token" not in response.text
    assert any(cookie.startswith(redirect.cookie.split("=")[0] + "=;") for cookie in response.cookies)
    assert snapshot(service_env, flow_api.tenant, connection["id"])["status"] == {"S": "connected"}


def test_a_refused_popup_connect_posts_the_error(flow_api: InProcessApi, provider: OidcProvider) -> None:
    connection = create_connection(flow_api, provider)
    redirect = open_redirect_url(flow_api, start_popup(flow_api, connection["id"]))
    result = walk_authorization(redirect.location, approve=False)
    _, _, data = page_parts(callback(flow_api, result, redirect.cookie))
    assert data["target_origin"] == RETURN_ORIGIN
    assert data["message"]["status"] == "error" and data["message"]["error"] == "access_denied"
    assert data["message"]["connection_id"] == connection["id"]


def test_a_page_connect_still_redirects(flow_api: InProcessApi, provider: OidcProvider) -> None:
    connection = create_connection(flow_api, provider)
    started = flow_api.call(
        "start_authorization", connection_id=connection["id"], body={"return_url": RETURN_URL, "display": "page"}
    )
    redirect = open_redirect_url(flow_api, started.json()["redirect_url"])
    response = callback(flow_api, walk_authorization(redirect.location), redirect.cookie)
    assert response.status == 302 and response.headers["Location"].startswith(RETURN_ORIGIN)


def test_an_unknown_display_is_refused(flow_api: InProcessApi, provider: OidcProvider) -> None:
    connection = create_connection(flow_api, provider)
    response = flow_api.call(
        "start_authorization", connection_id=connection["id"], body={"return_url": RETURN_URL, "display": "iframe"}
    )
    assert response.status == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_the_popup_page_escapes_what_it_embeds() -> None:
    message = popup_message("error", "con_x", "provider_error", "</script><script>alert(1)</script>")
    page, headers = popup_page(message, "https://app.example.com/back?x=1&status=error")
    assert "</script><script>alert(1)" not in page
    nonce = re.findall(r"'nonce-([^']+)'", headers["Content-Security-Policy"])
    assert nonce and page.count(f"nonce={nonce[0]}") == 2  # the script and the style, nothing else
    again, _ = popup_page(message, "https://app.example.com/back")
    assert re.findall(r"nonce=(\S+?)>", again) != re.findall(r"nonce=(\S+?)>", page)  # fresh per answer


def test_two_flows_in_one_browser_each_keep_their_cookie(
    flow_api: InProcessApi, provider: OidcProvider, service_env: Resources
) -> None:
    first = create_connection(flow_api, provider)
    second = create_connection(flow_api, provider)
    redirects = [open_redirect_url(flow_api, start_popup(flow_api, item["id"])) for item in (first, second)]
    names = {redirect.cookie.split("=")[0] for redirect in redirects}
    assert len(names) == 2  # the second did not overwrite the first
    results = [walk_authorization(redirect.location) for redirect in redirects]
    jar = [redirect.cookie for redirect in redirects]  # the browser sends both cookies on each callback
    for result in reversed(results):
        response = flow_api.call("oauth_callback", query=result.query, cookies=jar)
        assert page_parts(response)[2]["message"]["status"] == "connected"
    for item in (first, second):
        assert snapshot(service_env, flow_api.tenant, item["id"])["status"] == {"S": "connected"}


def test_the_state_gets_ten_minutes_from_the_redirect(
    flow_api: InProcessApi, provider: OidcProvider, service_env: Resources
) -> None:
    """A link opened nine minutes after POST /authorize still gives the provider sign-in ten minutes."""
    connection = create_connection(flow_api, provider)
    redirect_url = start_popup(flow_api, connection["id"])
    table = boto3.resource("dynamodb").Table(service_env.table_name)
    soon = utcnow() + timedelta(minutes=1)  # the link is opened nine minutes late
    for item in table.scan()["Items"]:
        if str(item["pk"]).startswith("FLOW#") and item.get("connection_id") == connection["id"]:
            table.update_item(
                Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression="SET expires_at = :e",
                ExpressionAttributeValues={":e": soon.strftime("%Y-%m-%dT%H:%M:%S.%f+0000")},
            )
    redirect = open_redirect_url(flow_api, redirect_url)
    states = [
        item
        for item in table.scan()["Items"]
        if str(item["pk"]).startswith("STATE#") and item.get("connection_id") == connection["id"]
    ]
    assert len(states) == 1
    expires = datetime.strptime(str(states[0]["expires_at"]), "%Y-%m-%dT%H:%M:%S.%f%z")
    assert expires - utcnow() > timedelta(minutes=9, seconds=50)
    response = callback(flow_api, walk_authorization(redirect.location), redirect.cookie)
    assert page_parts(response)[2]["message"]["status"] == "connected"
