"""allowed_urls under a kept URL: `{instance_url}/services/data/` is filled in from the connection's kept
metadata, only from a value its rule marks as a URL and that still matches the rule's pattern, and never so
that the token could go to another host."""

from __future__ import annotations

import pytest

from oauth_connections.connections.models import ConnectionCreate
from oauth_connections.oauth import token_endpoint
from oauth_connections.oauth.token_endpoint import MetadataRule, Quirks
from oauth_connections.profiles import catalog
from oauth_connections.security.netguard import UrlPolicy
from tests.conftest import InProcessApi

INSTANCE = MetadataRule("instance_url", r"^https://[a-z0-9-]{1,40}\.my\.salesforce\.com$", "api_base")
QUIRKS = Quirks(response_metadata=(INSTANCE, MetadataRule("org", r"^https://.+$")))
TEMPLATE = "{instance_url}/services/data/"


def test_a_template_is_filled_in_from_the_kept_url() -> None:
    resolved = token_endpoint.resolved_allowed_urls(
        ["https://login.salesforce.com/id/", TEMPLATE], QUIRKS, {"instance_url": "https://acme.my.salesforce.com"}
    )
    assert resolved == ("https://login.salesforce.com/id/", "https://acme.my.salesforce.com/services/data/")


def test_a_template_without_its_value_yet_allows_nothing() -> None:
    assert token_endpoint.resolved_allowed_urls([TEMPLATE], QUIRKS, {}) == ()


@pytest.mark.parametrize(
    "hostile",
    [
        "https://acme.my.salesforce.com.evil.example",  # another host: leaves the pattern
        "https://evil.example",
        "https://acme.my.salesforce.com@evil.example",
        "https://acme.my.salesforce.com#@evil.example",
        "http://10.0.0.1",
    ],
)
def test_a_value_that_would_widen_allowed_urls_is_refused(hostile: str) -> None:
    assert token_endpoint.resolved_allowed_urls([TEMPLATE], QUIRKS, {"instance_url": hostile}) == ()


@pytest.mark.parametrize(
    "hostile",
    ["https://evil.example@good.example", "https://good.example?next=https://evil.example", "https://a.example#x"],
)
def test_a_loose_pattern_still_admits_only_a_plain_url(hostile: str) -> None:
    loose = Quirks(response_metadata=(MetadataRule("base", r"^https://.+$", "api_base"),))
    assert token_endpoint.resolved_allowed_urls(["{base}/v1/"], loose, {"base": hostile}) == ()


def test_a_value_kept_before_its_rule_was_narrowed_is_refused() -> None:
    narrowed = Quirks(response_metadata=(MetadataRule("instance_url", r"^https://eu\.example\.com$", "api_base"),))
    kept = {"instance_url": "https://acme.my.salesforce.com"}
    assert token_endpoint.resolved_allowed_urls([TEMPLATE], narrowed, kept) == ()


def test_a_plain_value_is_never_a_url() -> None:
    """`org` is kept as a value (not checked as a URL when kept), so a template cannot name it."""
    assert token_endpoint.resolved_allowed_urls(["{org}/"], QUIRKS, {"org": "https://evil.example"}) == ()


def connection(allowed_urls: list[str], **quirks: object) -> dict[str, object]:
    return {
        "name": "kept urls",
        "client_id": "c",
        "client_secret": "s",
        "token_url": "https://login.salesforce.com/services/oauth2/token",
        "allowed_urls": allowed_urls,
        "quirks": quirks
        or {"response_metadata": [{"name": "instance_url", "use": "api_base", "pattern": INSTANCE.pattern}]},
    }


@pytest.mark.parametrize(
    ("allowed_urls", "code", "message"),
    [
        (["{instance_url}/../admin/"], "invalid_url_template", "a template must be"),
        (["{instance_url}/x?y=1"], "invalid_url_template", "a template must be"),
        (["{instance_url}.evil.example/"], "invalid_url_template", "a template must be"),
        (["{instance_url}/{other}/"], "invalid_url_template", "a template must be"),
        (["{unknown}/"], "validation_error", "names no kept URL"),
    ],
)
def test_a_bad_template_is_a_422(api: InProcessApi, allowed_urls: list[str], code: str, message: str) -> None:
    response = api.call("create_connection", body=connection(allowed_urls))
    assert response.status == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert message in response.text
    assert code in response.text or code == "validation_error"


def test_a_template_may_not_name_a_plain_value(api: InProcessApi) -> None:
    body = connection(["{org}/"], response_metadata=[{"name": "org", "pattern": "^https://.+$"}])
    response = api.call("create_connection", body=body)
    assert response.status == 422, response.text
    assert "names no kept URL" in response.text


def test_an_edit_that_drops_the_rule_a_template_names_is_a_422(api: InProcessApi) -> None:
    created = api.call("create_connection", body=connection([TEMPLATE]))
    assert created.status == 201, created.text
    assert created.json()["allowed_urls"] == [TEMPLATE]
    edited = api.call("update_connection", connection_id=created.json()["id"], body={"quirks": {}})
    assert edited.status == 422, edited.text
    assert "names no kept URL" in edited.json()["error"]["message"]


def test_the_catalog_puts_a_kept_api_base_under_allowed_urls(api: InProcessApi) -> None:
    fields = catalog.connection_fields("salesforce", {"login_host": "login"}, UrlPolicy())
    assert fields["allowed_urls"] == ["{instance_url}/"]
    request = ConnectionCreate.model_validate(
        {"name": "sf", "provider": "salesforce", "config": {"login_host": "login"}, "client_id": "c"}
        | {"client_secret": "s"}
    )
    assert request.allowed_urls == ["{instance_url}/"]
