"""Helpers to drive the authorization flow in-process against the real provider."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3

from tests.conftest import InProcessApi, Resources
from tests.support.provider import AUTH_METHOD_CLIENTS, OidcProvider, connection_body
from tests.support.user_agent import AuthorizationResult, walk_authorization

CALLBACK = "https://api.example.com/oauth2/callback"
RETURN_URL = "https://app.example.com/settings/connections?tab=crm"
CLIENTS = AUTH_METHOD_CLIENTS


def create_connection(
    api: InProcessApi, provider: OidcProvider, method: str = "client_secret_basic", **extra: Any
) -> dict[str, Any]:
    response = api.call("create_connection", body=connection_body(provider.issuer, method, **extra))
    assert response.status == 201, response.text
    return response.json()


@dataclass
class Redirect:
    location: str
    cookie: str


def start(api: InProcessApi, connection_id: str, return_url: str = RETURN_URL) -> str:
    response = api.call("start_authorization", connection_id=connection_id, body={"return_url": return_url})
    assert response.status == 200, response.text
    return response.json()["redirect_url"]


def open_redirect_url(api: InProcessApi, redirect_url: str) -> Redirect:
    handle = parse_qs(urlsplit(redirect_url).query)["flow"][0]
    response = api.call("authorize_redirect", query={"flow": handle})
    assert response.status == 302, response.text
    assert len(response.cookies) == 1
    cookie = response.cookies[0]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    return Redirect(response.headers["Location"], cookie.split(";")[0])


def callback(api: InProcessApi, result: AuthorizationResult, cookie: str | None) -> Any:
    assert result.callback_url.startswith(CALLBACK)
    return api.call("oauth_callback", query=result.query, cookies=[cookie] if cookie else [])


def stored_item(resources: Resources, tenant: str, connection_id: str) -> dict[str, Any]:
    return boto3.client("dynamodb").get_item(
        TableName=resources.table_name,
        Key={"pk": {"S": f"TENANT#{tenant}"}, "sk": {"S": f"CONNECTION#{connection_id}"}},
        ConsistentRead=True,
    )["Item"]


def connect(api: InProcessApi, provider: OidcProvider, connection: dict[str, Any]) -> None:
    redirect = open_redirect_url(api, start(api, connection["id"]))
    assert callback(api, walk_authorization(redirect.location), redirect.cookie).status == 302


def error_of(response: Any) -> dict[str, str]:
    assert response.status == 302, response.text
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == RETURN_URL.split("?")[0]
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["status"] == "error"
    return query


def snapshot(resources: Resources, tenant: str, connection_id: str) -> dict[str, Any]:
    item = stored_item(resources, tenant, connection_id)
    return {k: item.get(k) for k in ("status", "tokens_ciphertext", "token_version", "expires_at", "version")}
