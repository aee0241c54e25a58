"""The OAuth2 client side: token requests through authlib, provider quirks, and discovery.

Every request goes through the SSRF guard (netguard). Token responses are normalised before authlib
reads them, because real providers send form-encoded bodies, `expires_in` as a string, comma-delimited
scopes, `token_type` in any case, and errors with HTTP 200. Failures are classified once, here:
`ProviderRejectedError` (the provider said no: a permanent OAuth error) versus
`ProviderUnavailableError` (5xx, 429, timeouts, connection errors, garbage: worth retrying later).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

from oauth_connections.core.errors import ServiceError, UnsafeUrlError
from oauth_connections.security.netguard import UrlPolicy, call_deadline, mount_guard

PERMANENT_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
MAX_PROVIDER_RESPONSE_BYTES = 256 * 1024  # token, metadata and revocation answers, after decompression
READ_CHUNK_BYTES = 16 * 1024
DEFAULT_RETRY_AFTER_SECONDS = 30
MAX_RETRY_AFTER_SECONDS = 3600
# Longer lifetimes than ten years are treated as unknown, not as a date.
MAX_EXPIRES_IN_SECONDS = 10 * 366 * 86_400
_DECIMAL = re.compile(r"\d{1,12}(\.\d{1,9})?")


class ProviderRejectedError(ServiceError):
    """The provider answered with an OAuth error (invalid_grant, invalid_client, ...)."""

    status = 400

    def __init__(self, error: str, description: str | None = None) -> None:
        super().__init__(description or error, code=error)
        self.error = error
        self.description = description

    @property
    def permanent(self) -> bool:
        return self.error in PERMANENT_ERRORS


class ProviderUnavailableError(ServiceError):
    """The provider could not answer usefully now; try again after retry_after seconds."""

    code = "provider_unavailable"
    status = 503

    def __init__(self, message: str, *, retry_after: int = DEFAULT_RETRY_AFTER_SECONDS) -> None:
        super().__init__(message)
        self.retry_after = max(1, min(int(retry_after), MAX_RETRY_AFTER_SECONDS))


@dataclass(frozen=True)
class ClientSettings:
    """What the token endpoint needs to know about the tenant's OAuth2 app."""

    client_id: str
    client_secret: str | None = field(repr=False)
    token_url: str
    auth_method: str
    scopes: tuple[str, ...] = ()
    scope_delimiter: str = " "


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    token_type: str
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: int | None = None  # epoch seconds; None when the provider did not say
    scopes: tuple[str, ...] | None = None  # None when the provider did not say
    id_token: str | None = field(default=None, repr=False)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "access_token": self.access_token,
                "token_type": self.token_type,
                "refresh_token": self.refresh_token,
                "expires_at": self.expires_at,
                "scopes": list(self.scopes) if self.scopes is not None else None,
                "id_token": self.id_token,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TokenSet:
        raw = json.loads(data)
        scopes = raw.get("scopes")
        return cls(
            access_token=raw["access_token"],
            token_type=raw.get("token_type") or "Bearer",
            refresh_token=raw.get("refresh_token"),
            expires_at=raw.get("expires_at"),
            scopes=tuple(scopes) if scopes is not None else None,
            id_token=raw.get("id_token"),
        )


def split_scopes(value: str) -> tuple[str, ...]:
    return tuple(s for s in value.replace(",", " ").split() if s)


def _retry_after(headers: Any) -> int:
    value = headers.get("Retry-After")
    if not value:
        return DEFAULT_RETRY_AFTER_SECONDS
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit alone admits digits ("²") that int() refuses
        return int(value) if len(value) <= 9 else MAX_RETRY_AFTER_SECONDS
    try:
        return int(parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_SECONDS


class ProviderResponseTooLargeError(ProviderUnavailableError):
    """A provider's answer went past MAX_PROVIDER_RESPONSE_BYTES; reading stopped there."""


def _read_bounded(response: Any, *args: Any, **kwargs: Any) -> Any:
    """requests response hook (it runs before the body is read): read the decoded body in chunks and
    stop at the limit, so a gzip bomb or an endless body costs at most MAX_PROVIDER_RESPONSE_BYTES."""
    body = bytearray()
    for chunk in response.iter_content(READ_CHUNK_BYTES):
        body += chunk
        if len(body) > MAX_PROVIDER_RESPONSE_BYTES:
            response.close()
            raise ProviderResponseTooLargeError(
                f"{response.url.split('?')[0]} answered more than {MAX_PROVIDER_RESPONSE_BYTES} bytes"
            )
    response._content = bytes(body)
    return response


def _bounded(session: Any) -> Any:
    session.hooks["response"].append(_read_bounded)
    return session


def _body_of(resp: Any) -> dict[str, Any]:
    content = resp.content or b""
    content_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    text = content.decode("utf-8", errors="replace").strip()
    if content_type == "application/x-www-form-urlencoded" or (
        not text.startswith("{") and "=" in text and "<" not in text
    ):
        return dict(parse_qsl(text, keep_blank_values=True))
    try:
        parsed = json.loads(text)
    except ValueError as error:
        raise ProviderUnavailableError(f"token endpoint answered HTTP {resp.status_code} without JSON") from error
    if not isinstance(parsed, dict):
        raise ProviderUnavailableError("token endpoint answered with a JSON value that is no object")
    return parsed


def expires_in_seconds(value: object) -> int | None:
    """A token lifetime in whole seconds, or None (unknown) for anything that is not a sane positive number.

    Providers have sent `1e400`, `"Infinity"`, `NaN`, negative values and 40-digit strings; none of these
    may raise or become an expiry no date can hold, so the token is then used until a consumer's 401.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL.fullmatch(text):
            return None
        value = float(text)
    if not math.isfinite(value) or not 0 < value <= MAX_EXPIRES_IN_SECONDS:
        return None
    return int(value)


def normalize_token_response(resp: Any) -> Any:
    """authlib compliance hook: classify failures and rewrite quirky bodies into the standard shape."""
    status = resp.status_code
    if status == 429 or status >= 500:
        raise ProviderUnavailableError(f"token endpoint answered HTTP {status}", retry_after=_retry_after(resp.headers))
    body = _body_of(resp)
    error = body.get("error")
    if error:
        raise ProviderRejectedError(str(error)[:100], str(body.get("error_description") or "")[:300] or None)
    if status >= 400:
        raise ProviderUnavailableError(f"token endpoint answered HTTP {status} without an OAuth error")
    if not isinstance(body.get("access_token"), str) or not body["access_token"]:
        raise ProviderUnavailableError("token response has no access_token")
    normalized: dict[str, Any] = {"access_token": body["access_token"]}
    normalized["token_type"] = str(body.get("token_type") or "Bearer")
    for name in ("refresh_token", "id_token"):
        if isinstance(body.get(name), str) and body[name]:
            normalized[name] = body[name]
    seconds = expires_in_seconds(body.get("expires_in"))
    if seconds is not None:
        normalized["expires_in"] = seconds
    scope = body.get("scope")
    if isinstance(scope, list):
        scope = " ".join(str(s) for s in scope)
    if isinstance(scope, str):
        normalized["scope"] = " ".join(split_scopes(scope))
    resp._content = json.dumps(normalized).encode()
    resp.headers["Content-Type"] = "application/json"
    return resp


def _token_set(token: dict[str, Any], *, fallback_scopes: tuple[str, ...] | None, now: float) -> TokenSet:
    token_type = str(token.get("token_type") or "Bearer")
    expires_in = token.get("expires_in")
    scope = token.get("scope")
    return TokenSet(
        access_token=token["access_token"],
        token_type="Bearer" if token_type.lower() == "bearer" else token_type,
        refresh_token=token.get("refresh_token"),
        expires_at=int(now) + int(expires_in) if expires_in else None,
        scopes=split_scopes(scope) if isinstance(scope, str) else fallback_scopes,
        id_token=token.get("id_token"),
    )


def _session(client: ClientSettings, policy: UrlPolicy) -> Any:
    from authlib.integrations.requests_client import OAuth2Session

    session = OAuth2Session(
        client_id=client.client_id,
        client_secret=client.client_secret,
        token_endpoint_auth_method=client.auth_method,
    )
    _bounded(mount_guard(session, policy))
    session.register_compliance_hook("access_token_response", normalize_token_response)
    session.register_compliance_hook("refresh_token_response", normalize_token_response)
    return session


def _call_token_endpoint(call: Any, timeout: float) -> dict[str, Any]:
    """One token request, connect and response together within `timeout` seconds (call_deadline)."""
    import requests

    with call_deadline(timeout) as deadline:
        try:
            return dict(call())
        except (ProviderRejectedError, ProviderUnavailableError):
            raise
        except UnsafeUrlError as error:
            raise ProviderUnavailableError(f"token endpoint refused by the URL guard: {error.message}") from error
        except requests.Timeout as error:
            raise ProviderUnavailableError("token endpoint timed out") from error
        except requests.RequestException as error:
            if deadline.expired:
                raise ProviderUnavailableError("token endpoint timed out") from error
            raise ProviderUnavailableError(f"token endpoint unreachable: {type(error).__name__}") from error


def exchange_code(
    client: ClientSettings,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str | None,
    policy: UrlPolicy,
    timeout: float,
) -> TokenSet:
    session = _session(client, policy)
    extra: dict[str, Any] = {"code_verifier": code_verifier} if code_verifier else {}
    now = time.time()
    token = _call_token_endpoint(
        lambda: session.fetch_token(
            client.token_url,
            grant_type="authorization_code",
            code=code,
            redirect_uri=redirect_uri,
            timeout=timeout,
            allow_redirects=False,
            **extra,
        ),
        timeout,
    )
    return _token_set(token, fallback_scopes=client.scopes, now=now)


# ------------------------------------------------------------------ discovery


def refresh(client: ClientSettings, current: TokenSet, *, policy: UrlPolicy, timeout: float) -> TokenSet:
    """Use the refresh token once. A provider that sends no new refresh token keeps the old one valid."""
    if not current.refresh_token:
        raise ProviderRejectedError("invalid_grant", "no refresh token is stored")
    session = _session(client, policy)
    now = time.time()
    token = _call_token_endpoint(
        lambda: session.refresh_token(
            client.token_url, refresh_token=current.refresh_token, timeout=timeout, allow_redirects=False
        ),
        timeout,
    )
    fresh = _token_set(token, fallback_scopes=current.scopes, now=now)
    if not fresh.refresh_token:
        fresh = TokenSet(
            access_token=fresh.access_token,
            token_type=fresh.token_type,
            refresh_token=current.refresh_token,
            expires_at=fresh.expires_at,
            scopes=fresh.scopes,
            id_token=fresh.id_token or current.id_token,
        )
    return fresh


def client_credentials(client: ClientSettings, *, policy: UrlPolicy, timeout: float) -> TokenSet:
    """The client-credentials grant (RFC 6749 §4.4): a token for the app itself, no browser involved."""
    session = _session(client, policy)
    extra: dict[str, Any] = {"scope": client.scope_delimiter.join(client.scopes)} if client.scopes else {}
    now = time.time()
    token = _call_token_endpoint(
        lambda: session.fetch_token(
            client.token_url, grant_type="client_credentials", timeout=timeout, allow_redirects=False, **extra
        ),
        timeout,
    )
    return _token_set(token, fallback_scopes=client.scopes, now=now)
