"""Connections from the provider catalog through the local stack: a tenant creates a Zendesk-, Salesforce-,
Zoho- or amoCRM-style connection with only its account's config, client id and secret (POST /connections with
`provider`), connects through the browser flow's callback, and a consumer gets the token, the kept metadata and
the API base URL from GetTokenFunction over the local Lambda endpoint; a refresh works and a permanent error
ends the grant. A kept URL (`{instance_url}/...` in allowed_urls) is where CallApiFunction, the Python client
and the Node.js client send the token, and nowhere a provider's later answer would widen it to.

The real providers' hosts cannot be reached from here, so after creating a connection exactly as a tenant
would, a test points the one setting that names the provider's token host (token_url; for Zoho also the
regional host pattern) at a scripted stand-in on loopback; everything else is the catalog's.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

import oauth_connections_client as client
from devstack import Stack
from devstack.config import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, NODE_DIR, REGION, REPO_ROOT
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import callback_url, get_token, invoke, new_tenant, query_of, start_authorization
from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint

RETURN_URL = "http://127.0.0.1:8000/connections"  # an allowed frontend origin of the local stack
A_DAY = 86_400  # min_valid_seconds that makes any token due for refresh
NODE = NODE_DIR / "node_modules" / ".bin" / "node"
NODE_SCRIPT = REPO_ROOT / "clients" / "node" / "call_api.mjs"
LOOPBACK = client.UrlPolicy(allow_insecure_loopback=True)


@pytest.fixture
def endpoint(running_endpoint: ScriptedTokenEndpoint) -> ScriptedTokenEndpoint:
    running_endpoint.reset()
    return running_endpoint


def from_catalog(api: ApiClient, provider: str, config: dict[str, str] | None = None) -> dict[str, Any]:
    """All a tenant gives: the provider, its config, the client id and secret; nothing else."""
    body: dict[str, Any] = {"name": f"{provider} {time.time_ns()}", "provider": provider, "client_id": "app-id"}
    body |= {"client_secret": "app-secret"} | ({"config": config} if config else {})
    created = api.post("/connections", json=body)
    assert created.status_code == 201, created.text
    view: dict[str, Any] = created.json()
    assert view["provider"] == provider and "app-secret" not in created.text
    return view


def to_stand_in(api: ApiClient, view: dict[str, Any], endpoint: ScriptedTokenEndpoint, **more: Any) -> None:
    """Point the token host at the loopback stand-in (the secret goes with it: it moves to a new origin)."""
    body = {"token_url": endpoint.url, "client_secret": "app-secret", **more}
    edited = api.patch(f"/connections/{view['id']}", json=body)
    assert edited.status_code == 200, edited.text


def callback(api: ApiClient, connection_id: str, authorize_at: str, **extra: str) -> dict[str, str]:
    """Walk the flow as a browser: our authorize redirect (to the provider's rendered authorization URL),
    then the provider's redirect back to our callback with a code and `extra`. Returns the return URL's query."""
    browser = requests.Session()
    redirect = browser.get(start_authorization(api, connection_id, RETURN_URL), allow_redirects=False)
    assert redirect.status_code == 302, redirect.text
    assert redirect.headers["Location"].startswith(authorize_at + "?"), redirect.headers["Location"]
    state = query_of(redirect.headers["Location"])["state"]
    answer = browser.get(
        f"{callback_url(api.stack)}?{urlencode({'code': 'the-code', 'state': state, **extra})}", allow_redirects=False
    )
    assert answer.status_code == 302, answer.text
    return query_of(answer.headers["Location"])


def ends_with_a_permanent_error(
    stack: Stack, api: ApiClient, tenant: str, connection_id: str, endpoint: ScriptedTokenEndpoint
) -> None:
    endpoint.queue(Scripted(400, {"error": "invalid_grant"}))
    ended = get_token(stack, tenant, connection_id, min_valid_seconds=A_DAY)
    assert ended["error"]["code"] == "reauthorization_required", ended
    shown = api.get(f"/connections/{connection_id}").json()
    assert (shown["status"], shown["status_reason"]) == ("reauthorization_required", "invalid_grant")


# ------------------------------------------------------------------ a token and the API base from the catalog alone


def test_a_zendesk_style_connection_from_the_catalog(stack: Stack, endpoint: ScriptedTokenEndpoint) -> None:
    tenant = new_tenant("zendesk")
    api = ApiClient(stack).as_tenant(tenant)
    view = from_catalog(api, "zendesk", {"subdomain": "acme"})
    assert view["token_url"] == "https://acme.zendesk.com/oauth/tokens"
    assert view["allowed_urls"] == ["https://acme.zendesk.com/api/v2"]
    to_stand_in(api, view, endpoint)
    endpoint.json_only = True  # Zendesk's token endpoint takes JSON bodies only
    endpoint.queue(Scripted(body={"access_token": "zd1", "refresh_token": "zr1", "expires_in": 3600}))
    back = callback(api, view["id"], "https://acme.zendesk.com/oauth/authorizations/new")
    assert back["status"] == "connected", back
    exchanged = endpoint.requests[-1]
    assert exchanged.is_json and exchanged.form["code"] == "the-code"
    assert (exchanged.form["client_id"], exchanged.form["client_secret"]) == ("app-id", "app-secret")

    token = get_token(stack, tenant, view["id"])
    assert token["access_token"] == "zd1", token
    assert token["api_base"] == "https://acme.zendesk.com/api/v2"
    assert token["allowed_urls"] == ["https://acme.zendesk.com/api/v2"]

    endpoint.queue(Scripted(body={"access_token": "zd2", "refresh_token": "zr2", "expires_in": 3600}))
    assert get_token(stack, tenant, view["id"], min_valid_seconds=A_DAY - 100)["access_token"] == "zd2"
    refresh = endpoint.requests[-1]
    assert refresh.is_json and refresh.form["grant_type"] == "refresh_token" and refresh.form["refresh_token"] == "zr1"
    ends_with_a_permanent_error(stack, api, tenant, view["id"], endpoint)


SALESFORCE_ORG = "https://acme.my.salesforce.com"


def test_a_salesforce_style_connection_from_the_catalog(stack: Stack, endpoint: ScriptedTokenEndpoint) -> None:
    tenant = new_tenant("salesforce")
    api = ApiClient(stack).as_tenant(tenant)
    view = from_catalog(api, "salesforce", {"login_host": "login"})
    assert view["token_url"] == "https://login.salesforce.com/services/oauth2/token"
    assert view["allowed_urls"] == ["{instance_url}/"]
    to_stand_in(api, view, endpoint)
    endpoint.queue(
        Scripted(
            body={"access_token": "sf1", "refresh_token": "sr1", "expires_in": 3600, "instance_url": SALESFORCE_ORG}
        )
    )
    back = callback(api, view["id"], "https://login.salesforce.com/services/oauth2/authorize")
    assert back["status"] == "connected", back
    assert endpoint.requests[-1].form["client_secret"] == "app-secret"  # client_secret_post, as the catalog says

    token = get_token(stack, tenant, view["id"])
    assert token["access_token"] == "sf1" and token["api_base"] == SALESFORCE_ORG
    assert token["metadata"] == {"instance_url": SALESFORCE_ORG}
    assert token["allowed_urls"] == [SALESFORCE_ORG + "/"]
    # The Python client reads the same answer through the same Lambda endpoint.
    fetched = client.get_access_token(tenant, view["id"], lambda_client=stack.lambda_client())
    assert fetched.allowed_urls == (SALESFORCE_ORG + "/",)

    # A refresh whose answer names another host keeps the token, and the kept URL, where they were.
    endpoint.queue(
        Scripted(
            body={
                "access_token": "sf2",
                "expires_in": 3600,
                "instance_url": "https://acme.my.salesforce.com.evil.example",
            }
        )
    )
    refreshed = get_token(stack, tenant, view["id"], min_valid_seconds=A_DAY)
    assert refreshed["access_token"] == "sf2", refreshed
    assert refreshed["api_base"] == SALESFORCE_ORG and refreshed["allowed_urls"] == [SALESFORCE_ORG + "/"]
    ends_with_a_permanent_error(stack, api, tenant, view["id"], endpoint)


def test_a_zoho_style_connection_from_the_catalog(stack: Stack, endpoint: ScriptedTokenEndpoint) -> None:
    tenant = new_tenant("zoho")
    api = ApiClient(stack).as_tenant(tenant)
    view = from_catalog(api, "zoho_crm")
    assert view["allowed_urls"] == ["{api_domain}/"]
    # The regional accounts host comes from the callback; the stand-in is the only one this test admits.
    quirks = view["quirks"]
    for rule in quirks["callback_metadata"]:
        if rule["name"] == "accounts-server":
            rule["pattern"] = f"^{re.escape(endpoint.origin)}$"
    to_stand_in(api, view, endpoint, token_url="https://accounts.zoho.com/oauth/v2/token", quirks=quirks)
    endpoint.queue(
        Scripted(
            body={
                "access_token": "zo1",
                "refresh_token": "zor",
                "expires_in": 3600,
                "api_domain": "https://www.zohoapis.eu",
            }
        )
    )
    back = callback(api, view["id"], "https://accounts.zoho.com/oauth/v2/auth", **{"accounts-server": endpoint.origin})
    assert back["status"] == "connected", back
    assert endpoint.requests[-1].path == "/oauth/v2/token"

    token = get_token(stack, tenant, view["id"])
    assert token["access_token"] == "zo1" and token["api_base"] == "https://www.zohoapis.eu"
    assert token["allowed_urls"] == ["https://www.zohoapis.eu/"]
    assert token["metadata"] == {"accounts-server": endpoint.origin, "api_domain": "https://www.zohoapis.eu"}
    endpoint.queue(Scripted(body={"access_token": "zo2", "expires_in": 3600}))
    assert get_token(stack, tenant, view["id"], min_valid_seconds=A_DAY - 100)["access_token"] == "zo2"
    assert endpoint.requests[-1].form["refresh_token"] == "zor"
    ends_with_a_permanent_error(stack, api, tenant, view["id"], endpoint)


@pytest.mark.parametrize(
    "forged", ["https://accounts.zoho.evil.example", "https://accounts.zoho.eu@127.0.0.1", "http://10.0.0.1"]
)
def test_a_forged_zoho_accounts_server_receives_nothing(
    stack: Stack, endpoint: ScriptedTokenEndpoint, forged: str
) -> None:
    api = ApiClient(stack).as_tenant(new_tenant("zoho-forged"))
    view = from_catalog(api, "zoho_crm")
    back = callback(api, view["id"], "https://accounts.zoho.com/oauth/v2/auth", **{"accounts-server": forged})
    assert back["status"] == "error" and back["error"] == "invalid_metadata", back
    assert endpoint.requests == []
    assert api.get(f"/connections/{view['id']}").json()["status"] == "pending"


# ------------------------------------------------------------------ the templated-subdomain family


def test_an_amocrm_style_templated_subdomain_connects_refreshes_and_ends(
    stack: Stack, endpoint: ScriptedTokenEndpoint
) -> None:
    """amoCRM: the token host is the account's subdomain, the body is JSON, the callback names the account
    (kept as metadata), and a refresh repeats the redirect URI."""
    tenant = new_tenant("amocrm")
    api = ApiClient(stack).as_tenant(tenant)
    view = from_catalog(api, "amocrm", {"subdomain": "acme"})
    assert view["token_url"] == "https://acme.amocrm.ru/oauth2/access_token"
    assert view["allowed_urls"] == ["https://acme.amocrm.ru/api/v4"]
    to_stand_in(api, view, endpoint)
    endpoint.json_only = True
    endpoint.queue(Scripted(body={"access_token": "am1", "refresh_token": "ar1", "expires_in": 3600}))
    back = callback(api, view["id"], "https://www.amocrm.ru/oauth", referer="acme.amocrm.ru")
    assert back["status"] == "connected", back

    token = get_token(stack, tenant, view["id"])
    assert token["access_token"] == "am1" and token["metadata"] == {"referer": "acme.amocrm.ru"}
    assert token["api_base"] == "https://acme.amocrm.ru/api/v4"
    assert api.get(f"/connections/{view['id']}").json()["metadata"] == {"referer": "acme.amocrm.ru"}

    endpoint.queue(Scripted(body={"access_token": "am2", "refresh_token": "ar2", "expires_in": 3600}))
    refreshed = get_token(stack, tenant, view["id"], min_valid_seconds=A_DAY)
    assert refreshed.get("access_token") == "am2", refreshed
    refresh = endpoint.requests[-1]
    assert refresh.is_json and refresh.form["refresh_token"] == "ar1"
    assert refresh.form["redirect_uri"] == callback_url(stack)  # the exchange's, as amoCRM requires
    ends_with_a_permanent_error(stack, api, tenant, view["id"], endpoint)


@pytest.mark.parametrize("provider", ["zendesk", "amocrm"])
@pytest.mark.parametrize(
    "subdomain",
    [
        "acme.zendesk.com.evil",  # leaves the pattern: another host
        "evil.example/x",
        "127.0.0.1",  # a private address
        "10.0.0.1#",
        "user@evil",  # userinfo
        "acme:8080",
    ],
)
def test_a_hostile_subdomain_is_refused_before_anything_is_sent(
    stack: Stack, endpoint: ScriptedTokenEndpoint, provider: str, subdomain: str
) -> None:
    api = ApiClient(stack).as_tenant(new_tenant("hostile"))
    body = {"name": "hostile", "provider": provider, "config": {"subdomain": subdomain}}
    refused = api.post("/connections", json=body | {"client_id": "app-id", "client_secret": "app-secret"})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "validation_error"
    assert "config subdomain must match" in refused.text
    assert api.get("/connections").json()["items"] == []
    assert endpoint.requests == []


# ------------------------------------------------------------------ a kept URL in allowed_urls


def kept_url_connection(api: ApiClient, endpoint: ScriptedTokenEndpoint) -> str:
    origin = re.escape(endpoint.origin)
    created = api.post(
        "/connections",
        json={
            "name": f"kept url {time.time_ns()}",
            "client_id": "app-id",
            "client_secret": "app-secret",
            "token_auth_method": "client_secret_post",
            "authorization_url": "https://login.example.com/authorize",
            "token_url": endpoint.url,
            "allowed_urls": ["{instance_url}/services/data/"],
            "quirks": {"response_metadata": [{"name": "instance_url", "use": "api_base", "pattern": f"^{origin}$"}]},
        },
    )
    assert created.status_code == 201, created.text
    connection_id: str = created.json()["id"]
    endpoint.queue(
        Scripted(
            body={"access_token": "k1", "refresh_token": "kr", "expires_in": 3600, "instance_url": endpoint.origin}
        )
    )
    assert callback(api, connection_id, "https://login.example.com/authorize")["status"] == "connected"
    return connection_id


def test_a_kept_url_is_where_every_client_sends_the_token(stack: Stack, endpoint: ScriptedTokenEndpoint) -> None:
    tenant = new_tenant("kept-url")
    api = ApiClient(stack).as_tenant(tenant)
    connection_id = kept_url_connection(api, endpoint)
    under = endpoint.origin + "/services/data/"
    assert get_token(stack, tenant, connection_id)["allowed_urls"] == [under]

    # CallApiFunction: a relative path goes under the kept URL; another path of the same host does not.
    endpoint.queue(Scripted(body={"records": 1}))
    call = {"tenant_id": tenant, "connection_id": connection_id, "method": "GET"}
    answer = invoke(stack.lambda_client(), call | {"path": "/v59.0/query"}, function="CallApiFunction").payload
    assert answer is not None and answer["status"] == 200, answer
    sent = endpoint.requests[-1]
    assert sent.path == "/services/data/v59.0/query" and sent.headers["Authorization"] == "Bearer k1"
    outside = invoke(stack.lambda_client(), call | {"url": endpoint.origin + "/admin"}, function="CallApiFunction")
    assert outside.payload is not None and outside.payload["error"]["code"] == "url_not_allowed", outside

    # The Python client, with the token from GetTokenFunction: the same URLs, the same refusal.
    session = client.AuthorizedSession(tenant, connection_id, policy=LOOPBACK, lambda_client=stack.lambda_client())
    endpoint.queue(Scripted(body={"records": 2}))
    assert session.get(under + "v59.0/query", timeout=10).json() == {"records": 2}
    seen = len(endpoint.requests)
    with pytest.raises(client.UrlNotAllowedError):
        session.get(endpoint.origin + "/admin", timeout=10)

    # The Node.js client goes through CallApiFunction.
    endpoint.queue(Scripted(body={"records": 3}))
    result = subprocess.run(
        [str(NODE), str(NODE_SCRIPT), json.dumps(call | {"path": "/v59.0/query"})],
        env={
            "PATH": "/usr/bin:/bin",
            "AWS_ENDPOINT_URL_LAMBDA": stack.lambda_url,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_KEY,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["body"] == '{"records": 3}'
    assert [r.path for r in endpoint.requests[seen:]] == ["/services/data/v59.0/query"]


def test_a_kept_url_a_provider_would_move_to_another_host_is_refused(
    stack: Stack, endpoint: ScriptedTokenEndpoint
) -> None:
    tenant = new_tenant("kept-url-moved")
    api = ApiClient(stack).as_tenant(tenant)
    connection_id = kept_url_connection(api, endpoint)
    other_host = "http://127.0.0.2:" + str(endpoint.port)  # loopback too, but not the host the pattern names
    endpoint.queue(Scripted(body={"access_token": "k2", "instance_url": other_host}))
    refreshed = get_token(stack, tenant, connection_id, min_valid_seconds=A_DAY)
    assert refreshed["access_token"] == "k2", refreshed
    assert refreshed["allowed_urls"] == [endpoint.origin + "/services/data/"]
    assert refreshed["metadata"] == {"instance_url": endpoint.origin}
    seen = len(endpoint.requests)
    call = {"tenant_id": tenant, "connection_id": connection_id, "method": "GET", "url": other_host + "/services/data/"}
    refused = invoke(stack.lambda_client(), call, function="CallApiFunction").payload
    assert refused is not None and refused["error"]["code"] == "url_not_allowed", refused
    assert len(endpoint.requests) == seen


# ------------------------------------------------------------------ token request settings of the catalog


def test_vk_id_sends_the_callbacks_device_id_on_the_exchange_and_the_refresh(
    stack: Stack, endpoint: ScriptedTokenEndpoint
) -> None:
    tenant = new_tenant("vk")
    api = ApiClient(stack).as_tenant(tenant)
    view = from_catalog(api, "vk_id")
    assert view["quirks"]["token_params"] == {"device_id": "{callback.device_id}"}
    to_stand_in(api, view, endpoint)
    endpoint.queue(Scripted(body={"access_token": "vk1", "refresh_token": "vr1", "expires_in": 3600}))
    back = callback(api, view["id"], "https://id.vk.com/authorize", device_id="dev-42")
    assert back["status"] == "connected", back
    exchanged = endpoint.requests[-1]
    assert exchanged.form["device_id"] == "dev-42" and exchanged.form["code_verifier"]
    assert get_token(stack, tenant, view["id"])["metadata"] == {"device_id": "dev-42"}
    endpoint.queue(Scripted(body={"access_token": "vk2", "refresh_token": "vr2", "expires_in": 3600}))
    assert get_token(stack, tenant, view["id"], min_valid_seconds=A_DAY).get("access_token") == "vk2"
    refresh = endpoint.requests[-1]
    assert refresh.form["refresh_token"] == "vr1" and refresh.form["device_id"] == "dev-42"


def test_notion_gets_its_version_header_on_every_token_request(stack: Stack, endpoint: ScriptedTokenEndpoint) -> None:
    tenant = new_tenant("notion")
    api = ApiClient(stack).as_tenant(tenant)
    view = from_catalog(api, "notion")
    to_stand_in(api, view, endpoint)
    endpoint.json_only = True
    workspace = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
    answer = {"access_token": "n1", "refresh_token": "nr1", "expires_in": 3600, "workspace_id": workspace}
    endpoint.queue(Scripted(body=answer))
    assert callback(api, view["id"], "https://api.notion.com/v1/oauth/authorize")["status"] == "connected"
    assert get_token(stack, tenant, view["id"])["metadata"] == {"workspace_id": workspace}
    endpoint.queue(Scripted(body=answer | {"access_token": "n2"}))
    assert get_token(stack, tenant, view["id"], min_valid_seconds=A_DAY).get("access_token") == "n2"
    exchanged, refresh = endpoint.requests[-2:]
    for recorded in (exchanged, refresh):
        assert recorded.is_json and recorded.headers["Notion-Version"] == "2022-06-28"
        assert recorded.headers["Authorization"].startswith("Basic ")  # the protocol's own header is untouched
    assert refresh.form["grant_type"] == "refresh_token"
