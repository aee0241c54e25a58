"""OAuth 2.0 Authorization Server Metadata (RFC 8414) and OpenID Connect discovery."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from oauth_connections.core.errors import ServiceError, UnsafeUrlError
from oauth_connections.oauth.token_endpoint import MAX_PROVIDER_RESPONSE_BYTES, ProviderResponseTooLargeError, _bounded
from oauth_connections.security.netguard import UrlPolicy, call_deadline


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str | None
    token_endpoint: str | None
    revocation_endpoint: str | None
    pkce_s256: bool
    iss_parameter_supported: bool


def metadata_urls(issuer: str) -> list[str]:
    """RFC 8414 (with path insertion) first, then OpenID Connect discovery."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    origin = f"{parts.scheme}://{parts.netloc}"
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}{path}/.well-known/openid-configuration",
    ]


class DiscoveryError(ServiceError):
    code = "discovery_failed"
    status = 422


def discover(issuer: str, policy: UrlPolicy, timeout: float) -> ProviderMetadata:
    import requests

    from oauth_connections.security.netguard import guarded_session

    session = _bounded(guarded_session(policy))
    last_problem = "no metadata document"
    for url in metadata_urls(issuer):
        try:
            with call_deadline(timeout):
                response = session.get(
                    url, timeout=timeout, allow_redirects=False, headers={"Accept": "application/json"}
                )
        except UnsafeUrlError as error:
            raise DiscoveryError(f"issuer refused by the URL guard: {error.message}") from error
        except ProviderResponseTooLargeError:
            last_problem = f"metadata is larger than {MAX_PROVIDER_RESPONSE_BYTES} bytes"
            continue
        except requests.RequestException as error:
            last_problem = f"{type(error).__name__} fetching metadata"
            continue
        if response.status_code != 200:
            last_problem = f"metadata answered HTTP {response.status_code}"
            continue
        try:
            document = response.json()
        except ValueError:
            last_problem = "metadata is not JSON"
            continue
        if not isinstance(document, dict):
            last_problem = "metadata is not a JSON object"
            continue
        if document.get("issuer") != issuer:
            raise DiscoveryError("the metadata's issuer does not match the issuer exactly")
        return ProviderMetadata(
            issuer=issuer,
            authorization_endpoint=_str_or_none(document.get("authorization_endpoint")),
            token_endpoint=_str_or_none(document.get("token_endpoint")),
            revocation_endpoint=_str_or_none(document.get("revocation_endpoint")),
            pkce_s256="S256" in (document.get("code_challenge_methods_supported") or []),
            iss_parameter_supported=document.get("authorization_response_iss_parameter_supported") is True,
        )
    raise DiscoveryError(f"discovery failed: {last_problem}")


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
