"""The authorization-code flow end to end over HTTP: our API, the real provider's own pages, our callback."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from devstack import Stack
from devstack.return_page import ReturnPage
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import (
    CLIENTS,
    authorize,
    callback_url,
    create_connection,
    get_token,
    new_tenant,
    query_of,
    start_authorization,
    without_query,
)
from tests.support.user_agent import walk_authorization

# A frontend on loopback (the local stack allows http://127.0.0.1:* and http://localhost:*); the
# browser's last hop is never requested here, so nothing needs to listen on it.
RETURN_URL = "http://127.0.0.1:5173/settings/connections?tab=crm"
# The binding cookies' name prefix on the plain-http local API (__Host-oauth_flow_ on https); each flow's
# cookie adds a suffix of its own.
COOKIE = "oauth_flow_"


def connected_events(stack: Stack, connection_id: str) -> list[dict[str, Any]]:
    return [
        event
        for event in stack.published_events()
        if event["detail-type"] == "connection.connected" and event["detail"]["connection_id"] == connection_id
    ]


def error_redirect(response: requests.Response) -> dict[str, str]:
    """Our callback's answer to a failed flow: a 302 back to the frontend with status=error."""
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert without_query(location) == without_query(RETURN_URL)
    query = query_of(location)
    assert query["status"] == "error", location
    assert query["tab"] == "crm"
    return query


def status_of(api: ApiClient, connection_id: str) -> str:
    response = api.get(f"/connections/{connection_id}")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


@pytest.mark.parametrize("method", sorted(CLIENTS))
def test_connects_with_each_client_type(api: ApiClient, stack: Stack, provider: OidcProvider, method: str) -> None:
    tenant = new_tenant("flow")
    client = api.as_tenant(tenant)
    connection = create_connection(client, provider, method)
    assert connection["status"] == "pending"
    assert connection["token_url"] == provider.token_endpoint  # discovered by the service from the issuer
    assert connection["redirect_uri"] == callback_url(stack)

    redirect_url = start_authorization(client, connection["id"], RETURN_URL)
    assert without_query(redirect_url) == stack.api_url + "/oauth2/authorize"
    session = requests.Session()
    result = walk_authorization(redirect_url, session=session)
    # The first hop bound the flow to this browser with an HttpOnly cookie on our API's host.
    binding = next(cookie for cookie in session.cookies if cookie.name.startswith(COOKIE))
    assert binding.has_nonstandard_attr("HttpOnly") and binding.get_nonstandard_attr("SameSite") == "Lax"
    assert binding.domain == "127.0.0.1" and not binding.secure  # plain-http loopback API: no Secure flag
    # ... and sent it to the provider with our callback, the connection's scopes, state and PKCE S256.
    request = query_of(result.visited[1])
    assert without_query(result.visited[1]) == provider.authorization_endpoint
    assert request["client_id"] == CLIENTS[method][0]
    assert request["redirect_uri"] == callback_url(stack)
    assert request["scope"] == "api.read api.write"
    assert request["code_challenge_method"] == "S256" and len(request["code_challenge"]) == 43
    assert len(request["state"]) >= 43
    assert without_query(result.callback_url) == callback_url(stack)
    assert result.code and result.state == request["state"] and result.iss == provider.issuer

    response = result.follow()  # our callback, requested with the same session: the cookie goes along
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert without_query(location) == without_query(RETURN_URL)
    assert query_of(location) == {"tab": "crm", "status": "connected", "connection_id": connection["id"]}
    assert result.code not in location
    spent = response.headers["Set-Cookie"]
    assert spent.startswith(f"{binding.name}=;") and "Max-Age=0" in spent  # the binding cookie is expired

    view = client.get(f"/connections/{connection['id']}").json()
    assert view["status"] == "connected"
    assert set(view["granted_scopes"]) == {"api.read", "api.write"}
    assert view["connected_at"] is not None and view["expires_at"] is not None

    token = get_token(stack, tenant, connection["id"])
    assert token["token_type"] == "Bearer"
    assert set(token["scopes"]) == {"api.read", "api.write"}
    introspection = provider.introspect(token["access_token"], BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)
    assert introspection["active"] is True
    assert introspection["client_id"] == CLIENTS[method][0]

    events = connected_events(stack, connection["id"])
    assert len(events) == 1, events
    assert events[0]["source"] == "oauth-connections"
    assert events[0]["detail"]["tenant_id"] == tenant
    assert events[0]["detail"]["status"] == "connected"
    # The tokens are in no API answer and in no log line.
    assert token["access_token"] not in response.text + location
    assert token["access_token"] not in "\n".join(stack.function_logs())


def test_replayed_callback_is_refused(api: ApiClient, stack: Stack, provider: OidcProvider) -> None:
    tenant = new_tenant("flow")
    client = api.as_tenant(tenant)
    connection = create_connection(client, provider)
    _, result = authorize(client, connection["id"], RETURN_URL)
    assert query_of(result.follow().headers["Location"])["status"] == "connected"
    token = get_token(stack, tenant, connection["id"])["access_token"]
    # The same callback again, cookie and all (the cookie jar still has it: the replay sends it explicitly).
    replay = requests.get(result.callback_url, allow_redirects=False, timeout=30, headers=_cookie_header(result))
    assert error_redirect(replay)["error"] == "state_already_used"
    assert error_redirect(result.follow())["error"] == "state_already_used"
    assert status_of(client, connection["id"]) == "connected"
    assert get_token(stack, tenant, connection["id"])["access_token"] == token  # the replay changed nothing
    assert len(connected_events(stack, connection["id"])) == 1


def _cookie_header(result: Any) -> dict[str, str]:
    """The Cookie header the browser sent with its callback request."""
    request = result.response.request if result.response is not None else None
    assert request is not None and request.headers.get("Cookie"), "the callback was not requested with a cookie"
    return {"Cookie": str(request.headers["Cookie"])}


def test_callback_from_another_browser_is_refused(api: ApiClient, stack: Stack, provider: OidcProvider) -> None:
    tenant = new_tenant("flow")
    client = api.as_tenant(tenant)
    connection = create_connection(client, provider)
    _, result = authorize(client, connection["id"], RETURN_URL)
    elsewhere = requests.Session().get(result.callback_url, allow_redirects=False, timeout=30)
    assert error_redirect(elsewhere)["error"] == "browser_mismatch"
    forged = requests.Session()
    assert result.state is not None
    forged.cookies.set(f"{COOKIE}{hashlib.sha256(result.state.encode()).hexdigest()[:16]}", "forged-value")
    assert error_redirect(forged.get(result.callback_url, allow_redirects=False, timeout=30))["error"] == (
        "browser_mismatch"
    )
    assert status_of(client, connection["id"]) == "pending"
    assert get_token(stack, tenant, connection["id"])["error"]["code"] == "not_connected"
    assert connected_events(stack, connection["id"]) == []
    # The refusals did not burn the flow: the browser that started it still completes it.
    assert query_of(result.follow().headers["Location"])["status"] == "connected"
    assert status_of(client, connection["id"]) == "connected"


def test_access_denied_at_the_provider(api: ApiClient, stack: Stack, provider: OidcProvider) -> None:
    tenant = new_tenant("flow")
    client = api.as_tenant(tenant)
    connection = create_connection(client, provider)
    _, result = authorize(client, connection["id"], RETURN_URL, approve=False)
    assert result.error == "access_denied" and result.code is None
    error = error_redirect(result.follow())
    assert error["error"] == "access_denied"
    assert error["error_description"]
    assert status_of(client, connection["id"]) == "pending"
    assert get_token(stack, tenant, connection["id"])["error"]["code"] == "not_connected"
    assert connected_events(stack, connection["id"]) == []


def test_redirect_url_is_single_use(api: ApiClient, provider: OidcProvider) -> None:
    client = api.as_tenant(new_tenant("flow"))
    connection = create_connection(client, provider)
    redirect_url = start_authorization(client, connection["id"], RETURN_URL)
    first = requests.get(redirect_url, allow_redirects=False, timeout=30)
    assert first.status_code == 302
    assert without_query(first.headers["Location"]) == provider.authorization_endpoint
    again = requests.get(redirect_url, allow_redirects=False, timeout=30)
    assert again.status_code == 400
    assert again.headers["Content-Type"].startswith("text/html")
    assert "Location" not in again.headers and "Set-Cookie" not in again.headers


def test_unknown_state_shows_an_error_page(api: ApiClient, stack: Stack) -> None:
    response = requests.get(
        callback_url(stack), params={"code": "x", "state": "never-issued"}, allow_redirects=False, timeout=30
    )
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Location" not in response.headers
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "return_url",
    [
        "https://evil.example.com/done",
        "http://127.0.0.1.evil.example.com/done",
        "http://127.0.0.1:5173@evil.example.com/done",
        "https://127.0.0.1:5173/done",  # the allowed origins are http only
        "http://127.0.0.1:5173/done#fragment",
        "//127.0.0.1:5173/done",
        "javascript:alert(1)",
        "http://127.0.0.1:5173/\\@evil.example.com",
    ],
)
def test_return_url_outside_the_allowed_origins_is_400(api: ApiClient, provider: OidcProvider, return_url: str) -> None:
    client = api.as_tenant(new_tenant("flow"))
    connection = create_connection(client, provider)
    response = client.post(f"/connections/{connection['id']}/authorize", json={"return_url": return_url})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_return_url"
    assert "redirect_url" not in response.text
    # localhost on any port is allowed locally, like 127.0.0.1.
    allowed = client.post(f"/connections/{connection['id']}/authorize", json={"return_url": "http://localhost:3000/x"})
    assert allowed.status_code == 200, allowed.text
    assert urlsplit(allowed.json()["redirect_url"]).path == "/oauth2/authorize"


@pytest.fixture
def return_page() -> Iterator[ReturnPage]:
    """The landing page `make run` serves for return URLs, on a free port."""
    page = ReturnPage(0)
    page.start("return-page")
    try:
        yield page
    finally:
        page.stop()


@pytest.mark.parametrize("approve", [True, False], ids=["connected", "denied"])
def test_the_flow_ends_on_the_local_landing_page(
    api: ApiClient, provider: OidcProvider, return_page: ReturnPage, approve: bool
) -> None:
    """The local stack's allowed return origins admit its landing page, and the page says what happened."""
    client = api.as_tenant(new_tenant("flow"))
    connection = create_connection(client, provider)
    _, result = authorize(client, connection["id"], return_page.page_url, approve=approve)
    back = result.follow()
    assert back.status_code == 302, back.text
    landing = requests.get(back.headers["Location"], timeout=30)
    assert landing.status_code == 200 and landing.headers["content-type"] == "text/html; charset=utf-8"
    if approve:
        assert "<h1 id=status>Connected</h1>" in landing.text
        assert f"<code id=connection>{connection['id']}</code>" in landing.text
    else:
        assert "<h1 id=status>Connection failed</h1>" in landing.text
        assert "<code id=error>access_denied</code>" in landing.text
