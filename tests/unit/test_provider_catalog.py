"""The provider catalog: every entry follows the schema, every URL it can produce is one the SSRF guard
accepts, and every value a tenant or a provider supplies is held to its declared pattern.

Patterns are matched against the whole value (`re.fullmatch`), as the code that applies them must.
"""

from __future__ import annotations

import copy
import json
import re
import socket
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from oauth_connections.core.errors import UnsafeUrlError
from oauth_connections.security import netguard
from tests.unit.conftest import PUBLIC_ADDRESS

PROFILES = Path(__file__).resolve().parents[2] / "layers" / "shared" / "oauth_connections" / "profiles"
PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")
URL_KEYS = ("authorization_url", "token_url", "refresh_url", "revocation_url", "issuer")
HOSTILE_VALUES = (
    "",
    "evil.com",
    "evil.com/x",
    "a.b",
    "127.0.0.1",
    "x@evil.com",
    "a/b",
    "a#b",
    "a?b",
    "a%2e",
    "a b",
    "examplecompany\n",
    "{subdomain}",
)
# A config value becomes a host label or a path segment of a URL, so it must also fit a DNS label.
HOSTILE_CONFIG_VALUES = (*HOSTILE_VALUES, "a" * 64)


@cache
def load(name: str) -> Any:
    return json.loads((PROFILES / name).read_text(encoding="utf-8"))


def catalog() -> dict[str, Any]:
    return copy.deepcopy(load("catalog.json"))


def providers() -> list[dict[str, Any]]:
    return list(catalog()["providers"])


def validator() -> Any:
    return Draft202012Validator(load("catalog.schema.json"))


def guard(url: str) -> str:
    """The service's own check for a URL it will call, with its default strict policy."""
    return netguard.check_url(url, netguard.STRICT, require_resolution=True)


def templates(provider: dict[str, Any]) -> dict[str, str]:
    found = {key: provider["endpoints"][key] for key in URL_KEYS if key in provider["endpoints"]}
    if "api_base_url" in provider:
        found["api_base_url"] = provider["api_base_url"]
    return found


def render(template: str, values: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def examples(provider: dict[str, Any]) -> dict[str, str]:
    return {field["name"]: field["example"] for field in provider.get("config", [])}


def metadata(provider: dict[str, Any]) -> list[dict[str, Any]]:
    return [*provider.get("response_metadata", []), *provider.get("callback_metadata", [])]


def matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def errors_of(document: dict[str, Any]) -> set[tuple[tuple[str | int, ...], str]]:
    """Every (location, keyword) the schema objects to, nested if/then failures included."""

    def walk(errors: Any) -> Iterator[Any]:
        for error in errors:
            yield error
            yield from walk(error.context or ())

    return {(tuple(error.absolute_path), error.validator) for error in walk(validator().iter_errors(document))}


def by_id(provider_id: str) -> int:
    return next(i for i, p in enumerate(providers()) if p["id"] == provider_id)


@pytest.fixture
def every_name_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every provider host resolves to a public address, as the public resolvers answer for them."""

    def answer(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (PUBLIC_ADDRESS, int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", answer)


# ------------------------------------------------------------------ the schema


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = load("catalog.schema.json")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_catalog_validates_against_its_schema() -> None:
    assert errors_of(catalog()) == set()


def test_catalog_covers_the_providers_tenants_use() -> None:
    ids = {p["id"] for p in providers()}
    assert len(ids) >= 20
    assert {
        "hubspot",
        "salesforce",
        "pipedrive",
        "zoho_crm",
        "amocrm",
        "kommo",
        "bitrix24",
        "microsoft_entra",
        "google",
        "shopify",
        "zendesk",
        "slack",
        "atlassian",
        "notion",
        "mailchimp",
        "dropbox",
        "github",
        "quickbooks",
        "xero",
        "yandex",
        "vk_id",
    } <= ids


def test_provider_ids_are_unique() -> None:
    ids = [p["id"] for p in providers()]
    assert len(ids) == len(set(ids))


def mutated(provider_id: str, change: Any) -> dict[str, Any]:
    document = catalog()
    change(document["providers"][by_id(provider_id)])
    return document


@pytest.mark.parametrize(
    ("provider_id", "change", "where", "keyword"),
    [
        pytest.param(
            "zendesk", lambda p: p.update(unknown=1), ("providers", "zendesk"), "additionalProperties", id="unknown-key"
        ),
        pytest.param(
            "zendesk",
            lambda p: p["endpoints"].update(token_url="http://{subdomain}.zendesk.com/oauth/tokens"),
            ("providers", "zendesk", "endpoints", "token_url"),
            "pattern",
            id="plain-http",
        ),
        pytest.param(
            "zendesk",
            lambda p: p["endpoints"].update(token_url="https://u:p@{subdomain}.zendesk.com/oauth/tokens"),
            ("providers", "zendesk", "endpoints", "token_url"),
            "pattern",
            id="userinfo",
        ),
        pytest.param(
            "zendesk",
            lambda p: p["endpoints"].update(token_url="https://{subdomain}.zendesk.com/oauth/tokens?x=1"),
            ("providers", "zendesk", "endpoints", "token_url"),
            "pattern",
            id="query-in-template",
        ),
        pytest.param(
            "zendesk",
            lambda p: p["endpoints"].update(token_url="https://{sub.domain}.zendesk.com/oauth/tokens"),
            ("providers", "zendesk", "endpoints", "token_url"),
            "pattern",
            id="malformed-placeholder",
        ),
        pytest.param(
            "zendesk",
            lambda p: p["config"][0].update(pattern="[a-z]+"),
            ("providers", "zendesk", "config", 0, "pattern"),
            "pattern",
            id="unanchored-field-pattern",
        ),
        pytest.param(
            "zendesk",
            lambda p: p["config"][0].pop("example"),
            ("providers", "zendesk", "config", 0),
            "required",
            id="field-without-example",
        ),
        pytest.param(
            "zendesk",
            lambda p: p["docs"].pop("config"),
            ("providers", "zendesk", "docs"),
            "required",
            id="config-without-docs",
        ),
        pytest.param(
            "google",
            lambda p: p["docs"].pop("authorization_params"),
            ("providers", "google", "docs"),
            "required",
            id="params-without-docs",
        ),
        pytest.param(
            "google",
            lambda p: p["extra_authorize_params"].update(redirect_uri="https://evil.example"),
            ("providers", "google", "extra_authorize_params"),
            "not",
            id="protocol-param-overridden",
        ),
        pytest.param(
            "amocrm",
            lambda p: p["quirks"].update(token_params={"client_secret": "x"}),
            ("providers", "amocrm", "quirks", "token_params"),
            "not",
            id="protocol-body-param-overridden",
        ),
        pytest.param(
            "amocrm",
            lambda p: p["quirks"].update(refresh_params={"redirect_uri": "https://evil.example/cb"}),
            ("providers", "amocrm", "quirks", "refresh_params", "redirect_uri"),
            "const",
            id="redirect-uri-not-the-placeholder",
        ),
        pytest.param(
            "notion",
            lambda p: p["quirks"].update(token_headers={"Authorization": "Bearer x"}),
            ("providers", "notion", "quirks", "token_headers"),
            "not",
            id="protocol-header-set",
        ),
        pytest.param(
            "notion",
            lambda p: p["quirks"].update(token_headers={"proxy-authorization": "x"}),
            ("providers", "notion", "quirks", "token_headers"),
            "not",
            id="proxy-header-set",
        ),
        pytest.param(
            "salesforce",
            lambda p: p["response_metadata"][0].update(pattern="^[a-z.]+$"),
            ("providers", "salesforce", "response_metadata", 0, "pattern"),
            "pattern",
            id="api-base-pattern-not-https",
        ),
        pytest.param(
            "salesforce",
            lambda p: p["docs"].update(main="http://help.salesforce.com/"),
            ("providers", "salesforce", "docs", "main"),
            "pattern",
            id="docs-not-https",
        ),
        pytest.param(
            "github",
            lambda p: p.update(id="Git Hub"),
            ("providers", "github", "id"),
            "pattern",
            id="bad-id",
        ),
        pytest.param(
            "github",
            lambda p: p.pop("scope_delimiter"),
            ("providers", "github"),
            "dependentRequired",
            id="scopes-without-delimiter",
        ),
    ],
)
def test_schema_refuses_a_broken_entry(
    provider_id: str, change: Any, where: tuple[str | int, ...], keyword: str
) -> None:
    index = by_id(provider_id)
    location = tuple(index if part == provider_id else part for part in where)
    assert (location, keyword) in errors_of(mutated(provider_id, change))


# ------------------------------------------------------------------ templates and config fields


@pytest.mark.parametrize("provider", providers(), ids=lambda p: p["id"])
def test_every_placeholder_is_a_declared_config_field(provider: dict[str, Any]) -> None:
    used = {name for template in templates(provider).values() for name in PLACEHOLDER.findall(template)}
    declared = [field["name"] for field in provider.get("config", [])]
    assert len(declared) == len(set(declared))
    assert used == set(declared)


@pytest.mark.parametrize("provider", providers(), ids=lambda p: p["id"])
def test_every_template_renders_to_a_url_the_guard_accepts(provider: dict[str, Any], every_name_public: None) -> None:
    values = examples(provider)
    for template in templates(provider).values():
        url = render(template, values)
        assert urlsplit(url).scheme == "https"
        assert "{" not in url
        assert "}" not in url
        assert guard(url) == url


@pytest.mark.parametrize("provider", providers(), ids=lambda p: p["id"])
def test_the_guard_still_refuses_a_rendered_host_that_resolves_inside(
    provider: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catalog URL gets no pass: resolved to a private address it is refused like any other."""

    def private(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("10.0.0.7", int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", private)
    url = render(provider["endpoints"]["token_url"], examples(provider))
    with pytest.raises(UnsafeUrlError, match="not a public address"):
        guard(url)


@pytest.mark.parametrize("provider", [p for p in providers() if "config" in p], ids=lambda p: p["id"])
def test_each_config_example_matches_its_pattern(provider: dict[str, Any]) -> None:
    for field in provider["config"]:
        assert matches(field["pattern"], field["example"]), field["name"]


@pytest.mark.parametrize(
    ("provider_id", "field"),
    [(p["id"], field) for p in providers() for field in p.get("config", [])],
    ids=lambda value: value if isinstance(value, str) else value["name"],
)
@pytest.mark.parametrize("hostile", HOSTILE_CONFIG_VALUES, ids=repr)
def test_a_hostile_config_value_is_refused_by_its_pattern(
    provider_id: str, field: dict[str, Any], hostile: str
) -> None:
    assert not matches(field["pattern"], hostile)


# ------------------------------------------------------------------ values the provider sends


@pytest.mark.parametrize("provider", [p for p in providers() if metadata(p)], ids=lambda p: p["id"])
def test_each_metadata_example_matches_its_pattern(provider: dict[str, Any], every_name_public: None) -> None:
    for field in metadata(provider):
        assert matches(field["pattern"], field["example"]), field["name"]
        if field["use"] != "value":
            assert guard(field["example"]) == field["example"]


def hostile_urls(example: str) -> list[str]:
    host_and_path = example.removeprefix("https://")
    host = host_and_path.split("/", 1)[0]
    return [
        "https://evil.com",
        "https://127.0.0.1",
        "https://[::1]",
        example.replace("https://", "http://", 1),
        f"https://{host}.evil.com",
        f"https://evil.com/{host_and_path}",
        f"https://user@{host_and_path}",
        f"https://{host}@evil.com",
        f"https://{host}%2F@evil.com",
        f"https://{host}:8443",
        f"https://{host}#@evil.com",
        f"https://{host}?@evil.com",
        f"https://{host}\\@evil.com",
        example + "\n",
        example.upper(),
    ]


@pytest.mark.parametrize(
    "field",
    [field for p in providers() for field in metadata(p) if field["use"] != "value"],
    ids=lambda field: field["name"],
)
def test_a_forged_provider_url_is_refused_by_its_pattern(field: dict[str, Any]) -> None:
    for forged in hostile_urls(field["example"]):
        assert not matches(field["pattern"], forged), forged


@pytest.mark.parametrize(
    "field",
    [field for p in providers() for field in metadata(p) if field["use"] == "value"],
    ids=lambda field: field["name"],
)
@pytest.mark.parametrize("hostile", HOSTILE_VALUES, ids=repr)
def test_a_forged_provider_value_is_refused_by_its_pattern(field: dict[str, Any], hostile: str) -> None:
    assert not matches(field["pattern"], hostile)


@pytest.mark.parametrize(
    "provider",
    [p for p in providers() if any(f["use"] == "token_origin" for f in metadata(p))],
    ids=lambda p: p["id"],
)
def test_a_token_origin_moves_only_scheme_and_host_of_the_token_url(
    provider: dict[str, Any], every_name_public: None
) -> None:
    origin = next(f for f in metadata(provider) if f["use"] == "token_origin")["example"]
    token_url = urlsplit(render(provider["endpoints"]["token_url"], examples(provider)))
    moved = origin + token_url.path
    assert urlsplit(moved).netloc == urlsplit(origin).netloc
    assert guard(moved) == moved


# ------------------------------------------------------------------ what a connection form needs


@pytest.mark.parametrize("provider", providers(), ids=lambda p: p["id"])
def test_every_provider_names_its_api_base(provider: dict[str, Any]) -> None:
    assert "api_base_url" in provider or any(f["use"] == "api_base" for f in metadata(provider))


@pytest.mark.parametrize("provider", [p for p in providers() if "scopes" in p], ids=lambda p: p["id"])
def test_scopes_fit_their_delimiter_and_defaults_are_suggested(provider: dict[str, Any]) -> None:
    scopes = provider["scopes"]
    for scope in [*scopes["default"], *scopes["suggested"]]:
        assert provider["scope_delimiter"] not in scope
    assert set(scopes["default"]) <= set(scopes["suggested"])


@pytest.mark.parametrize("provider", providers(), ids=lambda p: p["id"])
def test_every_fact_group_has_a_documentation_link(provider: dict[str, Any]) -> None:
    groups = {
        "endpoints": True,
        "token_auth_method": "token_auth_method" in provider,
        "pkce": "pkce" in provider,
        "scopes": "scopes" in provider or "scope_delimiter" in provider,
        "authorization_params": "extra_authorize_params" in provider,
        "quirks": "quirks" in provider,
        "response_metadata": "response_metadata" in provider,
        "callback_metadata": "callback_metadata" in provider,
        "config": "config" in provider,
        "api": "api_base_url" in provider,
    }
    present = {group for group, has in groups.items() if has}
    assert present <= set(provider["docs"])
    assert set(provider["docs"]) - {"main"} <= present
    for link in provider["docs"].values():
        assert urlsplit(link).scheme == "https"
