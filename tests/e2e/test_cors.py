"""CORS as a browser meets it: the local API answers from the template's CorsConfiguration, as API Gateway does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page

from devstack import Stack
from tests.support.browser import launch_chromium
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider
from tests.support.return_page import ReturnPage
from tests.support.stack_flows import new_tenant

# Every call the console makes, with fetch from the page: what the browser lets the script read.
JOURNEY = """async ({api, token, issuer, clientId, secret, returnUrl}) => {
  const auth = {Authorization: `Bearer ${token}`};
  const json = {...auth, 'Content-Type': 'application/json'};
  const seen = {};
  let r = await fetch(`${api}/connections`, {method: 'POST', headers: json, body: JSON.stringify(
      {name: 'CORS CRM', client_id: clientId, client_secret: secret, issuer, scopes: ['api.read']})});
  const created = await r.json();
  seen.create = [r.status, created.status];
  r = await fetch(`${api}/connections`, {headers: auth});
  seen.list = [r.status, (await r.json()).items.length];
  r = await fetch(`${api}/connections/${created.id}`, {headers: auth});
  const etag = r.headers.get('ETag');
  seen.get = [r.status, etag];
  r = await fetch(`${api}/connections/${created.id}`, {method: 'PATCH', headers: {...json, 'If-Match': etag},
      body: JSON.stringify({description: 'from the browser'})});
  seen.patch = [r.status, r.headers.get('ETag'), (await r.json()).description];
  r = await fetch(`${api}/connections/${created.id}`, {method: 'PATCH', headers: {...json, 'If-Match': etag},
      body: JSON.stringify({description: 'stale'})});
  seen.stale = [r.status, (await r.json()).error.code];
  r = await fetch(`${api}/connections/${created.id}/authorize`, {method: 'POST', headers: json,
      body: JSON.stringify({return_url: returnUrl, display: 'popup'})});
  seen.authorize = [r.status, (await r.json()).redirect_url.startsWith(`${api}/oauth2/authorize?flow=`)];
  r = await fetch(`${api}/connections/${created.id}`, {method: 'DELETE', headers: auth});
  seen.delete = [r.status];
  return seen;
}"""

REFUSED = """async ({api, token}) => {
  try { await fetch(`${api}/connections`, {headers: {Authorization: `Bearer ${token}`}}); return 'read'; }
  catch (error) { return error.name; }
}"""


@pytest.fixture
def browser() -> Iterator[Browser]:
    with launch_chromium() as running:
        yield running


def blank_page(browser: Browser, url: str) -> Page:
    page = browser.new_context().new_page()
    page.goto(url)
    return page


@pytest.mark.browser
def test_a_page_on_an_allowed_origin_uses_the_whole_api(browser: Browser, stack: Stack, provider: OidcProvider) -> None:
    page = blank_page(browser, stack.console_url + "/config.json")  # a page on the allowed origin
    arguments: dict[str, Any] = {
        "api": stack.api_url,
        "token": stack.mint_token(new_tenant("cors")),
        "issuer": provider.issuer,
        "clientId": BASIC_CLIENT_ID,
        "secret": BASIC_CLIENT_SECRET,
        "returnUrl": stack.console_url + "/",
    }
    seen = page.evaluate(JOURNEY, arguments)
    etag = seen["get"][1]
    assert seen == {
        "create": [201, "pending"],
        "list": [200, 1],
        "get": [200, etag],
        "patch": [200, f'"{int(etag.strip(chr(34))) + 1}"', "from the browser"],
        "stale": [412, "stale_update"],
        "authorize": [200, True],
        "delete": [204],
    }


@pytest.mark.browser
def test_a_page_on_another_origin_is_refused_by_the_browser(browser: Browser, stack: Stack) -> None:
    with ReturnPage("/elsewhere") as elsewhere:
        page = blank_page(browser, elsewhere.url)
        assert page.evaluate(REFUSED, {"api": stack.api_url, "token": stack.mint_token("acme")}) == "TypeError"


def test_preflight_is_answered_by_the_gateway_without_a_token(stack: Stack) -> None:
    headers = {
        "Origin": stack.console_url,
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization,content-type,if-match",
    }
    before = len(stack.function_logs())
    answer = requests.options(
        f"{stack.api_url}/connections/con_00000000000000000000000000", headers=headers, timeout=30
    )
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == stack.console_url
    assert set(answer.headers["Access-Control-Allow-Methods"].split(",")) == {"GET", "POST", "PATCH", "DELETE"}
    assert answer.headers["Access-Control-Allow-Headers"].lower().split(",") == [
        "authorization",
        "content-type",
        "if-match",
    ]
    assert answer.headers["Access-Control-Max-Age"] == "600"
    assert len(stack.function_logs()) == before  # no function ran

    other = requests.options(
        f"{stack.api_url}/connections", headers=headers | {"Origin": "http://127.0.0.1:1"}, timeout=30
    )
    assert "Access-Control-Allow-Origin" not in other.headers

    read = requests.get(
        f"{stack.api_url}/connections",
        headers={"Origin": stack.console_url, "Authorization": f"Bearer {stack.mint_token('acme')}"},
        timeout=30,
    )
    assert read.status_code == 200
    assert read.headers["Access-Control-Allow-Origin"] == stack.console_url
    assert read.headers["Access-Control-Expose-Headers"] == "ETag"
    refused = requests.get(f"{stack.api_url}/connections", headers={"Origin": stack.console_url}, timeout=30)
    assert refused.status_code == 401  # the authorizer's answer is readable by the page too
    assert refused.headers["Access-Control-Allow-Origin"] == stack.console_url
