"""Provider profiles: the catalog rendered into connections, GET /providers, POST /connections with a provider."""

from __future__ import annotations

from typing import Any

import pytest

from oauth_connections.connections.models import ConnectionCreate
from oauth_connections.profiles import catalog
from oauth_connections.security.netguard import UrlPolicy
from tests.conftest import InProcessApi

STRICT = UrlPolicy()


def example_config(profile: dict[str, Any]) -> dict[str, str]:
    return {field["name"]: field["example"] for field in profile.get("config", [])}


@pytest.mark.parametrize("provider_id", sorted(catalog.providers()))
def test_every_profile_renders_into_a_valid_connection(api: InProcessApi, provider_id: str) -> None:
    profile = catalog.providers()[provider_id]
    request = ConnectionCreate.model_validate(
        {
            "name": provider_id,
            "provider": provider_id,
            "config": example_config(profile),
            "client_id": "cid",
            **({} if profile.get("token_auth_method") == "none" else {"client_secret": "s"}),
        }
    )
    assert request.token_url is not None and request.token_url.startswith("https://")
    assert "{" not in request.token_url and "{" not in (request.authorization_url or "")
    assert request.scopes == profile.get("scopes", {}).get("default", [])
    rules = request.quirks.response_metadata + request.quirks.callback_metadata
    assert [rule.name for rule in rules] == [
        rule["name"] for rule in profile.get("response_metadata", []) + profile.get("callback_metadata", [])
    ]


def test_a_templated_subdomain_fills_every_endpoint() -> None:
    fields = catalog.connection_fields("zendesk", {"subdomain": "acme"}, STRICT)
    assert fields["token_url"] == "https://acme.zendesk.com/oauth/tokens"
    assert fields["authorization_url"] == "https://acme.zendesk.com/oauth/authorizations/new"
    assert fields["allowed_urls"] == ["https://acme.zendesk.com/api/v2"]
    assert fields["quirks"] == {"token_request_format": "json"}


@pytest.mark.parametrize(
    ("provider_id", "config", "code"),
    [
        ("zendesk", {"subdomain": "evil.com/x"}, "invalid_config"),
        ("zendesk", {"subdomain": "acme.evil.com"}, "invalid_config"),
        ("zendesk", {"subdomain": "127.0.0.1"}, "invalid_config"),
        ("zendesk", {"subdomain": "x@evil"}, "invalid_config"),
        ("zendesk", {}, "invalid_config"),
        ("zendesk", {"subdomain": "acme", "host": "evil.com"}, "invalid_config"),
        ("nosuchprovider", {}, "unknown_provider"),
    ],
)
def test_hostile_config_is_refused(provider_id: str, config: dict[str, str], code: str) -> None:
    with pytest.raises(catalog.ProfileError) as refused:
        catalog.connection_fields(provider_id, config, STRICT)
    assert refused.value.code == code


def test_get_providers_lists_what_a_form_needs(api: InProcessApi) -> None:
    response = api.call("list_providers")
    assert response.status == 200, response.text
    providers = {p["id"]: p for p in response.json()["items"]}
    assert len(providers) == len(catalog.providers())
    zendesk = providers["zendesk"]
    assert [field["name"] for field in zendesk["config"]] == ["subdomain"]
    assert zendesk["config"][0]["pattern"].startswith("^")
    assert zendesk["docs_url"].startswith("https://developer.zendesk.com/")
    assert "read" in zendesk["suggested_scopes"]
    assert providers["salesforce"]["metadata"] == ["instance_url"]


def test_a_connection_from_a_provider_is_filled_in_and_stays_editable(api: InProcessApi) -> None:
    body = {
        "name": "Zendesk from the catalog",
        "provider": "zendesk",
        "config": {"subdomain": "acme"},
        "client_id": "zd-client",
        "client_secret": "zd-secret",
        "scopes": ["tickets:read"],
    }
    created = api.call("create_connection", body=body)
    assert created.status == 201, created.text
    view = created.json()
    assert view["provider"] == "zendesk" and view["config"] == {"subdomain": "acme"}
    assert view["token_url"] == "https://acme.zendesk.com/oauth/tokens"
    assert view["token_auth_method"] == "client_secret_post"
    assert view["scopes"] == ["tickets:read"]  # the tenant's own scopes win over the profile's default
    assert view["quirks"]["token_request_format"] == "json"
    assert view["metadata"] == {} and "client_secret" not in view
    updated = api.call("update_connection", connection_id=view["id"], body={"scopes": ["read", "write"]})
    assert updated.status == 200, updated.text
    assert updated.json()["scopes"] == ["read", "write"]
    assert updated.json()["quirks"] == view["quirks"]


@pytest.mark.parametrize(
    ("config", "field"), [({"subdomain": "evil.com/x"}, "provider"), ({"subdomain": "a", "x": "b"}, "provider")]
)
def test_a_hostile_provider_config_is_a_validation_error(api: InProcessApi, config: dict[str, str], field: str) -> None:
    body = {"name": "hostile", "provider": "zendesk", "config": config, "client_id": "c", "client_secret": "s"}
    response = api.call("create_connection", body=body)
    assert response.status == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert "evil.com" not in response.text
