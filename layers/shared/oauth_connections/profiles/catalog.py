"""The provider catalog: what a create form needs to show, and a profile rendered into connection settings.

A tenant's config value stands for a whole host label or path segment of a URL template, so it must match
its field's anchored pattern in full, and every rendered URL must pass the SSRF guard, before it is stored.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from oauth_connections.core.errors import UnsafeUrlError, ValidationFailedError
from oauth_connections.security.netguard import UrlPolicy, check_url

CATALOG_PATH = Path(__file__).with_name("catalog.json")
URL_FIELDS = ("authorization_url", "token_url", "refresh_url", "revocation_url", "issuer")
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]{0,31})\}")


class ProfileError(ValidationFailedError):
    """An unknown provider, or config values its profile does not accept."""


@cache
def providers() -> dict[str, dict[str, Any]]:
    catalog = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
    return {entry["id"]: entry for entry in catalog["providers"]}


def summary(profile: dict[str, Any]) -> dict[str, Any]:
    """What a create form shows: the provider, its config fields, its scopes and its documentation."""
    scopes = profile.get("scopes") or {"default": [], "suggested": []}
    return {
        "id": profile["id"],
        "name": profile["name"],
        "config": [
            {key: field[key] for key in ("name", "label", "description", "pattern", "example") if key in field}
            for field in profile.get("config", [])
        ],
        "default_scopes": list(scopes["default"]),
        "suggested_scopes": list(scopes["suggested"]),
        "scope_delimiter": profile.get("scope_delimiter", " "),
        "metadata": [
            rule["name"] for rule in profile.get("response_metadata", []) + profile.get("callback_metadata", [])
        ],
        "docs_url": profile["docs"]["main"],
    }


def summaries() -> list[dict[str, Any]]:
    return [summary(profile) for profile in providers().values()]


def _render(template: str, config: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda match: config[match.group(1)], template)


def _checked_config(profile: dict[str, Any], config: dict[str, str]) -> dict[str, str]:
    fields = {field["name"]: field for field in profile.get("config", [])}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ProfileError(f"{profile['id']} takes no config {', '.join(unknown)}", code="invalid_config")
    for name, field in fields.items():
        value = config.get(name)
        if not isinstance(value, str) or not re.fullmatch(field["pattern"], value):
            raise ProfileError(
                f"config {name} must match {field['pattern']} (for example {field['example']!r})",
                code="invalid_config",
            )
    return config


def connection_fields(provider_id: str, config: dict[str, str], policy: UrlPolicy) -> dict[str, Any]:
    """The settings of a connection to this provider for these config values (before the tenant's own)."""
    profile = providers().get(provider_id)
    if profile is None:
        raise ProfileError(f"no provider {provider_id!r} in the catalog", code="unknown_provider")
    config = _checked_config(profile, config)
    fields: dict[str, Any] = {}
    for name, template in profile["endpoints"].items():
        try:
            fields[name] = check_url(_render(template, config), policy)
        except UnsafeUrlError as error:
            raise ProfileError(f"{name} is refused: {error.message}", code="invalid_config") from error
    if "api_base_url" in profile:
        fields["allowed_urls"] = [check_url(_render(profile["api_base_url"], config), policy)]
    else:  # the API base is a kept URL (Salesforce's instance_url): the token may go under it once known
        kept = profile.get("response_metadata", []) + profile.get("callback_metadata", [])
        fields["allowed_urls"] = [f"{{{rule['name']}}}/" for rule in kept if rule["use"] == "api_base"]
    if "token_auth_method" in profile:
        fields["token_auth_method"] = profile["token_auth_method"]
    fields["use_pkce"] = profile.get("pkce") in ("required", "supported")
    fields["scope_delimiter"] = profile.get("scope_delimiter", " ")
    fields["scopes"] = list((profile.get("scopes") or {}).get("default", []))
    fields["extra_authorize_params"] = dict(profile.get("extra_authorize_params", {}))
    quirks = dict(profile.get("quirks", {}))
    for kind in ("response_metadata", "callback_metadata"):
        if kind in profile:
            quirks[kind] = [{key: rule[key] for key in ("name", "use", "pattern")} for rule in profile[kind]]
    fields["quirks"] = quirks
    return fields
