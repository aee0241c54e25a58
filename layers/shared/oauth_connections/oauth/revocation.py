"""Token revocation (RFC 7009), best effort."""

from __future__ import annotations

from oauth_connections.core.errors import UnsafeUrlError
from oauth_connections.oauth.token_endpoint import ClientSettings, ProviderUnavailableError, _session
from oauth_connections.security.netguard import UrlPolicy, call_deadline


def revoke(
    client: ClientSettings, revocation_url: str, token: str, hint: str, *, policy: UrlPolicy, timeout: float
) -> None:
    """RFC 7009 revocation; raises ProviderUnavailableError when the provider does not confirm it."""
    import requests

    session = _session(client, policy)
    try:
        with call_deadline(timeout):
            response = session.revoke_token(
                revocation_url, token=token, token_type_hint=hint, timeout=timeout, allow_redirects=False
            )
    except UnsafeUrlError as error:
        raise ProviderUnavailableError(f"revocation endpoint refused by the URL guard: {error.message}") from error
    except requests.RequestException as error:
        raise ProviderUnavailableError(f"revocation endpoint unreachable: {type(error).__name__}") from error
    if response.status_code != 200:
        raise ProviderUnavailableError(f"revocation endpoint answered HTTP {response.status_code}")
