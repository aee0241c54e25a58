"""The consumer client of the OAuth connection service: a valid access token, and calls made with it.

    from oauth_connections_client import AuthorizedSession, get_access_token

    token = get_access_token("acme", "con_...")           # typed errors, see TokenServiceError
    with AuthorizedSession("acme", "con_...") as session:  # bearer header, allowed_urls, one retry on 401
        session.get("https://api.crm.example.com/v2/contacts", timeout=10)

calls.py is the one call engine: AuthorizedSession sends through it, and so does the service's
CallApiFunction (the same rules for a function in any language that invokes it).

The caller's role needs lambda:InvokeFunction on GetTokenFunction (the service stack's GetTokenInvokePolicy).
GET_TOKEN_FUNCTION_NAME names the function (default "GetTokenFunction"); a `lambda_endpoint_url` (or
AWS_ENDPOINT_URL_LAMBDA) points the client at the local stack's Lambda endpoint.

It imports nothing of the service: netguard.py is a generated copy of the service's SSRF guard.
"""

from oauth_connections_client.errors import (
    ApiUnavailableError,
    CallTimeoutError,
    ConnectionNotConnectedError,
    ConnectionNotFoundError,
    InvalidCallError,
    InvalidTokenRequestError,
    ProviderUnavailableError,
    RateLimitedError,
    ReauthorizationRequiredError,
    ResponseTooLargeError,
    ServiceUnavailableError,
    TokenServiceError,
    UnsafeUrlError,
    UrlNotAllowedError,
)
from oauth_connections_client.netguard import STRICT, UrlPolicy, guarded_session
from oauth_connections_client.session import AuthorizedSession
from oauth_connections_client.tokens import AccessToken, get_access_token

__all__ = [
    "STRICT",
    "AccessToken",
    "ApiUnavailableError",
    "AuthorizedSession",
    "CallTimeoutError",
    "ConnectionNotConnectedError",
    "ConnectionNotFoundError",
    "InvalidCallError",
    "InvalidTokenRequestError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "ReauthorizationRequiredError",
    "ResponseTooLargeError",
    "ServiceUnavailableError",
    "TokenServiceError",
    "UnsafeUrlError",
    "UrlNotAllowedError",
    "UrlPolicy",
    "get_access_token",
    "guarded_session",
]
