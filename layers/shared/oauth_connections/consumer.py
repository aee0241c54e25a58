"""For the platform's other functions: get a valid access token, and call the provider with it.

    from oauth_connections.consumer import AuthorizedSession, get_access_token

    token = get_access_token("acme", "con_...")           # typed errors, see TokenServiceError
    with AuthorizedSession("acme", "con_...") as session:  # bearer header, allowed_urls, one retry on 401
        session.get("https://api.crm.example.com/v2/contacts", timeout=10)

The caller's role needs lambda:InvokeFunction on GetTokenFunction (the template's GetTokenInvokePolicy).
GET_TOKEN_FUNCTION_NAME names the function (default "GetTokenFunction"); a `lambda_endpoint_url` (or
AWS_ENDPOINT_URL_LAMBDA) points the client at the local stack's Lambda endpoint.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, ClassVar

import requests

from oauth_connections.netguard import STRICT, UrlPolicy, is_under, mount_guard


class TokenServiceError(Exception):
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ConnectionNotFoundError(TokenServiceError):
    code = "not_found"


class ConnectionNotConnectedError(TokenServiceError):
    code = "not_connected"


class ReauthorizationRequiredError(TokenServiceError):
    code = "reauthorization_required"


class ProviderUnavailableError(TokenServiceError):
    code = "provider_unavailable"


class ServiceUnavailableError(TokenServiceError):
    """The token service's own AWS dependencies were throttled or down; retry after `retry_after` seconds."""

    code = "service_unavailable"


class InvalidTokenRequestError(TokenServiceError):
    code = "invalid_request"


class UrlNotAllowedError(TokenServiceError):
    """The URL is outside the connection's allowed_urls: the token is never sent there."""

    code = "url_not_allowed"


_ERRORS: dict[str, type[TokenServiceError]] = {
    cls.code: cls
    for cls in (
        ConnectionNotFoundError,
        ConnectionNotConnectedError,
        ReauthorizationRequiredError,
        ProviderUnavailableError,
        ServiceUnavailableError,
        InvalidTokenRequestError,
    )
}


@dataclass(frozen=True)
class AccessToken:
    access_token: str = field(repr=False)
    token_type: str
    expires_at: datetime | None
    scopes: tuple[str, ...]
    allowed_urls: tuple[str, ...]

    def valid_for(self, seconds: float) -> bool:
        return self.expires_at is None or self.expires_at.timestamp() - time.time() >= seconds


@cache
def _lambda_client(endpoint_url: str | None) -> Any:
    import boto3

    return boto3.client("lambda", endpoint_url=endpoint_url)


def get_access_token(
    tenant_id: str,
    connection_id: str,
    *,
    min_valid_seconds: int = 60,
    force_refresh: bool = False,
    correlation_id: str | None = None,
    function_name: str | None = None,
    lambda_endpoint_url: str | None = None,
    lambda_client: Any = None,
) -> AccessToken:
    """Invoke GetTokenFunction; raises a TokenServiceError subclass for each of its error codes."""
    request: dict[str, Any] = {
        "tenant_id": tenant_id,
        "connection_id": connection_id,
        "min_valid_seconds": min_valid_seconds,
        "force_refresh": force_refresh,
    }
    if correlation_id:
        request["correlation_id"] = correlation_id
    client = lambda_client or _lambda_client(lambda_endpoint_url)
    response = client.invoke(
        FunctionName=function_name or os.environ.get("GET_TOKEN_FUNCTION_NAME", "GetTokenFunction"),
        InvocationType="RequestResponse",
        Payload=json.dumps(request).encode(),
    )
    payload = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError") or not isinstance(payload, dict):
        raise TokenServiceError("the token service failed")
    if "error" in payload:
        error = payload["error"]
        cls = _ERRORS.get(str(error.get("code")), TokenServiceError)
        raise cls(str(error.get("message", "")), retry_after=error.get("retry_after_seconds"))
    expires_at = payload.get("expires_at")
    return AccessToken(
        access_token=payload["access_token"],
        token_type=payload.get("token_type") or "Bearer",
        expires_at=datetime.fromisoformat(expires_at) if expires_at else None,
        scopes=tuple(payload.get("scopes") or ()),
        allowed_urls=tuple(payload.get("allowed_urls") or ()),
    )


type TokenSource = Any  # a callable like get_access_token


class AuthorizedSession(requests.Session):
    """A requests session that sends the connection's bearer token, and only where it may go.

    Every request (each redirect hop too) must be under one of the connection's allowed_urls and pass
    the SSRF guard. A 401 forces one refresh and one retry, never more.
    """

    def __init__(
        self,
        tenant_id: str,
        connection_id: str,
        *,
        min_valid_seconds: int = 60,
        policy: UrlPolicy = STRICT,
        token_source: TokenSource = get_access_token,
        **token_options: Any,
    ) -> None:
        super().__init__()
        mount_guard(self, policy)
        self.tenant_id = tenant_id
        self.connection_id = connection_id
        self.min_valid_seconds = min_valid_seconds
        self._token_source = token_source
        self._token_options = token_options
        self._token: AccessToken | None = None

    def _current_token(self, *, force: bool = False) -> AccessToken:
        if force or self._token is None or not self._token.valid_for(self.min_valid_seconds):
            self._token = self._token_source(
                self.tenant_id,
                self.connection_id,
                min_valid_seconds=self.min_valid_seconds,
                force_refresh=force,
                **self._token_options,
            )
        return self._token

    def _check_allowed(self, url: str, token: AccessToken) -> None:
        if not any(is_under(url, base) for base in token.allowed_urls):
            raise UrlNotAllowedError(f"{url.split('?')[0]} is not under the connection's allowed_urls")

    def request(self, method: str | bytes, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        target = url.decode() if isinstance(url, bytes) else url
        headers = dict(kwargs.pop("headers", None) or {})
        response = self._send_with_token(method, target, headers, kwargs, force=False)
        if response.status_code != 401:
            return response
        response.close()
        return self._send_with_token(method, target, headers, kwargs, force=True)

    def _send_with_token(
        self, method: str | bytes, url: str, headers: dict[str, str], options: dict[str, Any], *, force: bool
    ) -> requests.Response:
        token = self._current_token(force=force)
        self._check_allowed(url, token)
        headers["Authorization"] = f"Bearer {token.access_token}"
        return super().request(method, url, headers=headers, **options)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if self._token is not None and request.url:
            self._check_allowed(request.url, self._token)  # every redirect hop, before it is sent
        return super().send(request, **kwargs)
