"""The Connections console in headless Chromium, served by the local stack, against the real provider."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from scripted_api import Step, scripted_api

from devstack import Stack
from devstack.config import REPO_ROOT
from tests.support.browser import launch_chromium
from tests.support.feed_server import Catalog, FeedServer
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import callback_url, new_tenant

ARTIFACTS = REPO_ROOT / "test-artifacts" / "console"
AXE = REPO_ROOT / "console" / "node_modules" / "axe-core" / "axe.min.js"
TIMEOUT_MS = 20_000
SCOPES = "openid offline_access api.read api.write"
expect.set_options(timeout=TIMEOUT_MS)  # a refresh goes to the provider, on a busy machine too


@pytest.fixture
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with launch_chromium() as running:
        yield running


def console_context(browser: Browser, stack: Stack, *, bypass_csp: bool = False) -> BrowserContext:
    """``bypass_csp`` only to inject axe-core, which the console's own policy rightly refuses."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, bypass_csp=bypass_csp)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.console_url)
    context.set_default_timeout(TIMEOUT_MS)
    return context


def sign_in(page: Page, stack: Stack, tenant: str, *, read_only: bool = False) -> None:
    page.goto(stack.console_url)
    page.get_by_label("Tenant").fill(tenant)
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Read only" if read_only else "Read and manage").check()
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("tab", name="Connections")).to_be_visible()


def screenshot(page: Page, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    return path


def create_in_form(page: Page, provider: OidcProvider, name: str) -> None:
    page.get_by_role("button", name="New connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name", exact=True).fill(name)
    dialog.get_by_label("Client ID").fill(BASIC_CLIENT_ID)
    dialog.get_by_label("Client secret (optional)").fill(BASIC_CLIENT_SECRET)
    dialog.get_by_label("Scopes (separated by spaces)").fill(SCOPES)
    dialog.get_by_text("Advanced").click()
    dialog.get_by_label("Issuer (discovers the endpoints you leave empty)").fill(provider.issuer)
    dialog.get_by_role("button", name="Create").click()
    expect(dialog).to_be_hidden()


def row_of(page: Page, name: str) -> Any:
    return page.locator("#connections tbody tr", has=page.get_by_role("rowheader", name=name))


def connect_in_popup(page: Page, name: str) -> None:
    with page.expect_popup() as opened:
        row_of(page, name).get_by_role("button", name=f"Connect: {name}").click()
    popup = opened.value
    popup.locator("form:has(input[type=password])").wait_for(timeout=TIMEOUT_MS)
    screenshot(popup, "02b-provider-sign-in")
    sign_in_at_provider(popup)
    consent = popup.locator("form:has(input[name=prompt][value=consent])")
    with popup.expect_event("close", timeout=TIMEOUT_MS):  # the callback's page closes the popup itself
        consent.locator("[type=submit]").first.click()


def sign_in_at_provider(page: Page) -> None:
    """The provider's own sign-in page (any login name, any password), up to its consent page; a browser
    already signed in there goes straight to the consent page."""
    consent = page.locator("form:has(input[name=prompt][value=consent])")
    form = page.locator("form:has(input[type=password])")
    expect(form.or_(consent)).to_be_visible(timeout=TIMEOUT_MS)
    if consent.count():
        return
    form.locator("input[name=login], input[name=username], input[type=email]").first.fill("alice")
    form.locator("input[type=password]").fill("any-password")
    with page.expect_navigation(timeout=TIMEOUT_MS):
        form.locator("[type=submit]").first.click()


@pytest.mark.browser
def test_the_whole_journey_in_the_console(
    browser: Browser, stack: Stack, provider: OidcProvider, api: ApiClient
) -> None:
    tenant = new_tenant("console")
    context = console_context(browser, stack)
    page = context.new_page()
    sign_in(page, stack, tenant)
    screenshot(page, "01-empty")

    # The redirect URI is shown, and copied, before anything is connected.
    page.get_by_role("button", name="New connection").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_label("Redirect URI: register it at the provider")).to_have_value(callback_url(stack))
    dialog.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == callback_url(stack)
    dialog.get_by_role("button", name="Cancel").click()

    page.get_by_role("button", name="New connection").click()
    screenshot(page, "01b-create-form")
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    create_in_form(page, provider, "Demo CRM")
    row = row_of(page, "Demo CRM")
    expect(row.locator("[data-status]")).to_have_attribute("data-status", "pending")
    screenshot(page, "02-created")

    connect_in_popup(page, "Demo CRM")
    expect(row.locator("[data-status]")).to_have_attribute("data-status", "connected")  # no reload
    expect(page.get_by_role("status")).to_have_text("Demo CRM is connected.")
    screenshot(page, "03-connected")
    connection_id = row.get_attribute("data-connection-id")
    assert connection_id
    client = api.as_tenant(tenant)
    assert client.get(f"/connections/{connection_id}").json()["status"] == "connected"

    # Someone else changes the connection while the form is open: the save is refused and explained.
    row.get_by_role("button", name="Edit: Demo CRM").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("ends the grant")).to_be_visible()
    current = client.get(f"/connections/{connection_id}")
    changed = client.patch(
        f"/connections/{connection_id}",
        json={"description": "changed elsewhere"},
        headers={"If-Match": current.headers["ETag"]},
    )
    assert changed.status_code == 200, changed.text
    dialog.get_by_label("Description").fill("my change")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.get_by_role("alert")).to_contain_text("Someone changed this connection")
    screenshot(page, "04-conflict")
    dialog.get_by_role("button", name="Reload").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_label("Description")).to_have_value("changed elsewhere")
    # Moving the token endpoint to another origin without its secret is refused, and said so.
    moved = provider.token_endpoint.replace("127.0.0.1", "localhost")
    dialog.get_by_label("Token URL").fill(moved)
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.get_by_role("alert")).to_contain_text("enter the client secret for it")
    expect(dialog.get_by_role("alert")).to_contain_text("422 client_secret_required")
    dialog.get_by_role("button", name="Cancel").click()
    assert client.get(f"/connections/{connection_id}").json()["token_url"] == provider.token_endpoint

    row.get_by_role("button", name="Details: Demo CRM").click()
    details = page.get_by_role("dialog")
    expect(details).to_contain_text("api.read")
    # The timeline, newest first: the edit made elsewhere (with the field it changed), the connect, the create.
    timeline = details.get_by_role("list", name="Activity").get_by_role("listitem")
    expect(timeline.nth(0)).to_contain_text("Settings changed by dev-user — changed: description")
    expect(timeline.nth(1)).to_contain_text("Connected by alice")
    expect(timeline.nth(2)).to_contain_text("Authorization started by alice")
    expect(timeline.last).to_contain_text("Created")
    screenshot(page, "05-details")
    details.get_by_role("button", name="Close").click()

    with scripted_api() as me:
        me.script("/api/me", Step(200, body=b"{}"))
        tested = client.patch(
            f"/connections/{connection_id}", json={"allowed_urls": [f"{me.base}/api/"], "test_url": f"{me.base}/api/me"}
        )
        assert tested.status_code == 200, tested.text
        row.get_by_role("button", name="Refresh now: Demo CRM").click()  # the view now has the test_url
        expect(page.locator("#alert")).to_have_text("")
        expect(page.get_by_role("status")).to_have_text("Demo CRM was refreshed.")
        expect(row.locator("[data-status]")).to_have_attribute("data-status", "connected")
        row.get_by_role("button", name="Test: Demo CRM").click()
        expect(page.get_by_role("status")).to_have_text("Test passed: the API answered 200")
        assert [seen.path for seen in me.seen] == ["/api/me"]

    row.get_by_role("button", name="Delete: Demo CRM").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_have_text("Demo CRM was deleted.")
    expect(row).to_have_count(0)
    screenshot(page, "06-deleted")
    assert client.get(f"/connections/{connection_id}").status_code == 404
    context.close()


@pytest.mark.browser
def test_two_connects_in_one_browser_both_complete(
    browser: Browser, stack: Stack, provider: OidcProvider, api: ApiClient
) -> None:
    """Both popups are open at the provider at once; each flow keeps its own binding cookie."""
    tenant = new_tenant("console-two")
    client = api.as_tenant(tenant)
    context = console_context(browser, stack)
    page = context.new_page()
    sign_in(page, stack, tenant)
    create_in_form(page, provider, "First CRM")
    create_in_form(page, provider, "Second CRM")
    popups = []
    for name in ("First CRM", "Second CRM"):
        with page.expect_popup() as opened:
            row_of(page, name).get_by_role("button", name=f"Connect: {name}").click()
        popups.append(opened.value)
        sign_in_at_provider(opened.value)
    assert len([c for c in context.cookies(stack.api_url) if c["name"].startswith("oauth_flow_")]) == 2
    for popup in popups:
        with popup.expect_event("close", timeout=TIMEOUT_MS):
            popup.locator("form:has(input[name=prompt][value=consent]) [type=submit]").first.click()
    for name in ("First CRM", "Second CRM"):
        expect(row_of(page, name).locator("[data-status]")).to_have_attribute("data-status", "connected")
    statuses = {item["name"]: item["status"] for item in client.get("/connections").json()["items"]}
    assert statuses == {"First CRM": "connected", "Second CRM": "connected"}
    screenshot(page, "07-two-connected")
    context.close()


@pytest.mark.browser
def test_a_read_only_user_sees_no_controls_and_a_refusal_is_explained(
    browser: Browser, stack: Stack, provider: OidcProvider, api: ApiClient
) -> None:
    tenant = new_tenant("console-read")
    created = api.as_tenant(tenant).post(
        "/connections",
        json={
            "name": "Shared CRM",
            "client_id": BASIC_CLIENT_ID,
            "client_secret": BASIC_CLIENT_SECRET,
            "issuer": provider.issuer,
            "scopes": ["api.read"],
        },
    )
    assert created.status_code == 201, created.text
    context = console_context(browser, stack)
    page = context.new_page()
    sign_in(page, stack, tenant, read_only=True)
    row = row_of(page, "Shared CRM")
    expect(row.locator("[data-status]")).to_have_attribute("data-status", "pending")
    expect(page.locator("#read-only-notice")).to_be_visible()
    for control in ("New connection", "Connect: Shared CRM", "Edit: Shared CRM", "Delete: Shared CRM", "Refresh now"):
        expect(page.get_by_role("button", name=control)).to_have_count(0)
    row.get_by_role("button", name="Details: Shared CRM").click()
    expect(page.get_by_role("dialog")).to_contain_text("pending")
    page.get_by_role("dialog").get_by_role("button", name="Close").click()
    page.get_by_role("tab", name="Feeds").click()
    expect(page.get_by_role("button", name="New feed")).to_have_count(0)
    screenshot(page, "08-read-only")
    # Should the page try anyway, the gateway's 403 is told in words.
    answer = page.evaluate(
        """async (id) => {
            const module = await import('/api.js');
            const session = JSON.parse(sessionStorage.getItem('console.session'));
            const config = await (await fetch('/config.json')).json();
            try { await new module.Api(config.api_url, session.token).deleteConnection(id); return 'deleted'; }
            catch (error) { return [error.status, error.code, error.message]; }
        }""",
        created.json()["id"],
    )
    assert answer == [403, "forbidden", "Forbidden"]
    context.close()


@pytest.mark.browser
def test_the_console_has_no_serious_accessibility_violations(
    browser: Browser, stack: Stack, provider: OidcProvider, api: ApiClient
) -> None:
    tenant = new_tenant("console-axe")
    context = console_context(browser, stack, bypass_csp=True)
    page = context.new_page()
    page.goto(stack.console_url)
    screens: dict[str, list[dict[str, Any]]] = {"sign-in": axe(page)}
    sign_in(page, stack, tenant)
    create_in_form(page, provider, "Accessible CRM")
    screens["list"] = axe(page)
    page.get_by_role("button", name="New connection").click()
    page.get_by_role("dialog").get_by_text("Advanced").click()
    screens["create form"] = axe(page)
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(page.get_by_role("button", name="New connection")).to_be_focused()  # focus returns to the opener
    # Focused and pressed in one step: the tab gets the key even if focus moved between two steps.
    page.get_by_role("tab", name="Connections").press("ArrowRight")
    expect(page.get_by_role("tab", name="Feeds")).to_be_focused()
    expect(page.get_by_role("tab", name="Feeds")).to_have_attribute("aria-selected", "true")
    screens["feeds"] = axe(page)
    page.get_by_role("tab", name="Connections").click()
    screens["details with older activity"] = older_activity_pages(page, api.as_tenant(tenant), "Accessible CRM")
    serious = {
        screen: [(item["id"], item["impact"], len(item["nodes"])) for item in found]
        for screen, found in screens.items()
        if found
    }
    assert serious == {}
    context.close()


def older_activity_pages(page: Page, client: ApiClient, name: str) -> list[dict[str, Any]]:
    """A timeline longer than a page: the details show the newest 20 entries, "Show older" the rest, with
    the focus on the first one it added. Returns axe's findings on the details with the button."""
    row = row_of(page, name)
    connection_id = row.get_attribute("data-connection-id")
    for number in range(1, 22):
        edited = client.patch(f"/connections/{connection_id}", json={"description": f"edit {number}"})
        assert edited.status_code == 200, edited.text
    row.get_by_role("button", name=f"Details: {name}").click()
    details = page.get_by_role("dialog")
    timeline = details.get_by_role("list", name="Activity").get_by_role("listitem")
    expect(timeline).to_have_count(20)
    expect(timeline.first).to_contain_text("Settings changed by dev-user — changed: description")
    found = axe(page)
    details.get_by_role("button", name="Show older").click()
    expect(timeline).to_have_count(22)  # 21 edits and the create
    expect(timeline.nth(20)).to_be_focused()
    expect(timeline.last).to_contain_text("Created by alice")
    expect(details.get_by_role("button", name="Show older")).to_have_count(0)
    details.get_by_role("button", name="Close").click()
    return found


def axe(page: Page) -> list[dict[str, Any]]:
    """Serious and critical violations of axe-core (from the console's lockfile), injected into the page."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE.read_text(encoding="utf-8"))
    result = json.loads(page.evaluate("async () => JSON.stringify(await axe.run(document))"))
    assert len(result["passes"]) > 10  # the rules ran on a rendered page
    return [item for item in result["violations"] if item["impact"] in ("serious", "critical")]


@pytest.mark.browser
def test_feeds_are_created_edited_and_run_from_the_console(browser: Browser, stack: Stack) -> None:
    tenant = new_tenant("console-feeds")
    with FeedServer() as server:
        url = server.serve("/public/catalog.yml", Catalog(offers=25))
        context = console_context(browser, stack)
        page = context.new_page()
        sign_in(page, stack, tenant)
        page.get_by_role("tab", name="Feeds").click()
        page.get_by_role("button", name="New feed").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Name", exact=True).fill("Catalog")
        dialog.get_by_label("URL").fill(url)
        dialog.get_by_label("Format").select_option("yml")
        dialog.get_by_role("button", name="Create").click()
        expect(dialog).to_be_hidden()
        row = page.locator("#feeds tbody tr", has=page.get_by_role("rowheader", name="Catalog"))
        expect(row).to_have_count(1)

        row.get_by_role("button", name="Edit: Catalog").click()
        page.get_by_role("dialog").get_by_label("Name", exact=True).fill("Shop catalog")
        page.get_by_role("dialog").get_by_role("button", name="Save").click()
        row = page.locator("#feeds tbody tr", has=page.get_by_role("rowheader", name="Shop catalog"))
        expect(row).to_have_count(1)

        row.get_by_role("button", name="Run now: Shop catalog").click()
        expect(page.get_by_role("status")).to_have_text("Shop catalog is queued to run.")
        deadline = time.monotonic() + 30
        while True:
            row.get_by_role("button", name="Runs: Shop catalog").click()
            runs = page.get_by_role("dialog")
            expect(runs).to_be_visible()
            if runs.get_by_role("cell", name="succeeded").count() or time.monotonic() > deadline:
                break
            runs.get_by_role("button", name="Close").click()
            time.sleep(0.5)
        expect(runs.get_by_role("cell", name="succeeded")).to_have_count(1)
        expect(runs.get_by_role("cell", name="25", exact=True)).to_have_count(1)  # the offers it found
        screenshot(page, "09-feed-runs")
        assert len(server.requests_to("/public/catalog.yml")) == 1
        context.close()


@pytest.mark.browser
def test_a_popup_without_its_opener_goes_back_to_the_console(
    browser: Browser, stack: Stack, provider: OidcProvider, api: ApiClient
) -> None:
    """The sign-in link opened in a plain tab: the callback's page navigates to the return URL instead."""
    tenant = new_tenant("console-noopener")
    client = api.as_tenant(tenant)
    created = client.post(
        "/connections",
        json={
            "name": "Tab CRM",
            "client_id": BASIC_CLIENT_ID,
            "client_secret": BASIC_CLIENT_SECRET,
            "issuer": provider.issuer,
            "scopes": ["api.read"],
        },
    ).json()
    started = client.post(
        f"/connections/{created['id']}/authorize", json={"return_url": stack.console_url + "/", "display": "popup"}
    )
    context = console_context(browser, stack)
    page = context.new_page()
    sign_in(page, stack, tenant)
    page.goto(started.json()["redirect_url"])
    sign_in_at_provider(page)
    page.locator("form:has(input[name=prompt][value=consent]) [type=submit]").first.click()
    page.wait_for_url(f"{stack.console_url}/?*status=connected*", timeout=TIMEOUT_MS)
    expect(page.get_by_role("status")).to_have_text("Tab CRM is connected.")
    expect(row_of(page, "Tab CRM").locator("[data-status]")).to_have_attribute("data-status", "connected")
    context.close()


@pytest.mark.browser
def test_a_connection_is_created_from_the_catalog(browser: Browser, stack: Stack, api: ApiClient) -> None:
    """Picking a catalog provider asks only for its config fields; the service fills in its endpoints."""
    tenant = new_tenant("catalog")
    page = console_context(browser, stack).new_page()
    sign_in(page, stack, tenant)
    page.get_by_role("button", name="New connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Provider", exact=True).select_option(label="Zendesk")
    expect(dialog.get_by_label("Token URL")).to_be_hidden()
    expect(dialog.get_by_label("Scopes (separated by spaces)")).to_have_value("read")
    dialog.get_by_label("Zendesk subdomain").fill("acme")
    dialog.get_by_label("Name", exact=True).fill("Support desk")
    dialog.get_by_label("Client ID").fill("zd-client")
    dialog.get_by_label("Client secret (optional)").fill("zd-secret")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog).to_be_hidden()
    expect(row_of(page, "Support desk").locator("[data-status]")).to_have_attribute("data-status", "pending")
    (created,) = api.as_tenant(tenant).get("/connections").json()["items"]
    assert created["provider"] == "zendesk" and created["config"] == {"subdomain": "acme"}
    assert created["token_url"] == "https://acme.zendesk.com/oauth/tokens"
    assert created["quirks"]["token_request_format"] == "json"
