"""A real browser connects: headless Chromium, the local stack's API, the provider's own login and consent."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from devstack import Stack
from devstack.config import REPO_ROOT
from tests.support.browser import launch_chromium, login_and_consent
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider
from tests.support.return_page import ReturnPage
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import create_connection, get_token, new_tenant, query_of, start_authorization

ARTIFACTS = REPO_ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "browser-flow-connected.png"
NAVIGATION_TIMEOUT_MS = 20_000


@pytest.mark.browser
def test_browser_connects_on_the_providers_own_pages(
    api: ApiClient, stack: Stack, provider: OidcProvider, return_page: ReturnPage
) -> None:
    tenant = new_tenant("browser")
    client = api.as_tenant(tenant)
    connection = create_connection(client, provider, "client_secret_basic")
    connection_id = connection["id"]
    redirect_url = start_authorization(client, connection_id, return_page.url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)

    def returned(url: str) -> bool:
        return url.split("?")[0] == return_page.url and query_of(url).get("connection_id") == connection_id

    with launch_chromium() as browser:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(NAVIGATION_TIMEOUT_MS)
        page.goto(redirect_url)  # our API, then the provider's login page
        assert urlsplit(page.url).netloc == urlsplit(provider.issuer).netloc, page.url
        login_and_consent(page, "alice", "any-password")
        page.wait_for_url(returned, timeout=NAVIGATION_TIMEOUT_MS)
        assert query_of(page.url) == {"status": "connected", "connection_id": connection_id}
        assert page.locator("#status").inner_text() == "Connected"
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        # The binding cookie was spent by the callback: the browser no longer holds it.
        assert not [c for c in context.cookies(stack.api_url) if c["name"].startswith("oauth_flow_")]
        context.close()

    assert SCREENSHOT.is_file() and SCREENSHOT.stat().st_size > 0
    assert any("status=connected" in target for target in return_page.requests), return_page.requests
    view = client.get(f"/connections/{connection_id}").json()
    assert view["status"] == "connected"
    token = get_token(stack, tenant, connection_id)
    assert provider.introspect(token["access_token"], BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is True
