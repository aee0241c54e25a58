"""The OAuth2 client side: token requests through authlib, provider quirks, and discovery.

Every request goes through the SSRF guard (netguard). Token responses are normalised before authlib
reads them, because real providers send form-encoded bodies, `expires_in` as a string, comma-delimited
scopes, `token_type` in any case, and errors with HTTP 200. Failures are classified once, here:
`ProviderRejectedError` (the provider said no: a permanent OAuth error) versus
`ProviderUnavailableError` (5xx, 429, timeouts, connection errors, garbage: worth retrying later).

Providers that go further are described by `Quirks` on the client: a JSON request body, extra body
parameters, a separate refresh URL, a nested token, millisecond lifetimes, more error codes that end the
grant, and values of the token response or the callback to keep (`metadata`). A kept value that names a
host is trusted only when it matches the pattern its rule declares and passes the SSRF guard; a token
request never goes to a host that fails either check.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from oauth_connections.core.errors import ServiceError, UnsafeUrlError
from oauth_connections.core.observability import trace_http
from oauth_connections.security.netguard import UrlPolicy, call_deadline, check_url, mount_guard

PERMANENT_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
MAX_PROVIDER_RESPONSE_BYTES = 256 * 1024  # token, metadata and revocation answers, after decompression
READ_CHUNK_BYTES = 16 * 1024
DEFAULT_RETRY_AFTER_SECONDS = 30
MAX_RETRY_AFTER_SECONDS = 3600
# Longer lifetimes than ten years are treated as unknown, not as a date.
MAX_EXPIRES_IN_SECONDS = 10 * 366 * 86_400
_DECIMAL = re.compile(r"\d{1,12}(\.\d{1,9})?")
# Body parameters the protocol sets; quirk parameters never replace them.
PROTOCOL_TOKEN_PARAMS = frozenset(
    {
        "grant_type",
        "code",
        "redirect_uri",
        "refresh_token",
        "client_id",
        "client_secret",
        "code_verifier",
        "scope",
        "client_assertion",
        "client_assertion_type",
    }
)
# Headers of the request itself (credentials, target, body framing, the answer's format): no quirk sets them.
PROTOCOL_TOKEN_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "authorization",
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "cookie",
        "cookie2",
        "dpop",
        "expect",
        "host",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# A token_params or refresh_params value that is one of these is filled in per request: the redirect URI the
# code was issued for (some providers want it on the refresh too), or a value the callback carried and the
# connection keeps (callback_metadata). Only redirect_uri may carry the protocol's own redirect URI.
REDIRECT_URI_PLACEHOLDER = "{redirect_uri}"
CALLBACK_PLACEHOLDER = re.compile(
    r"^\{callback\.([A-Za-z][A-Za-z0-9_-]{0,63}(?:\.[A-Za-z][A-Za-z0-9_-]{0,63}){0,3})\}$"
)
MAX_METADATA_VALUE_CHARS = 2048
# RFC 7523 client authentication: a signed assertion per request, valid this long, with a fresh jti.
ASSERTION_METHODS = frozenset({"client_secret_jwt", "private_key_jwt"})
ASSERTION_LIFETIME_SECONDS = 60
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
# An allowed_urls entry under a kept URL: `{instance_url}/services/data/`. The path is plain: no query,
# no fragment, no placeholder and no dot segment, so it cannot leave the host the kept value names.
_URL_TEMPLATE = re.compile(
    r"^\{(?P<name>[A-Za-z][A-Za-z0-9_-]{0,63}(?:\.[A-Za-z][A-Za-z0-9_-]{0,63}){0,3})\}"
    r"(?P<path>/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$"
)
_DOT_SEGMENT = re.compile(r"(^|/)(\.|%2e){1,2}(/|$)", re.IGNORECASE)


class ProviderRejectedError(ServiceError):
    """The provider answered with an OAuth error (invalid_grant, invalid_client, ...)."""

    status = 400

    def __init__(
        self, error: str, description: str | None = None, *, permanent_errors: frozenset[str] = frozenset()
    ) -> None:
        super().__init__(description or error, code=error)
        self.error = error
        self.description = description
        self.permanent_errors = permanent_errors

    @property
    def permanent(self) -> bool:
        return self.error in PERMANENT_ERRORS or self.error in self.permanent_errors


class MetadataRefusedError(ProviderRejectedError):
    """A value from the provider or the callback that its rule does not admit; nothing was sent with it."""

    def __init__(self, description: str) -> None:
        super().__init__("invalid_metadata", description)


@dataclass(frozen=True)
class MetadataRule:
    """A value to keep: `name` is a dotted path (token response) or a query parameter (callback).

    use `api_base`: an API base URL; `token_origin`: the scheme and host token requests go to instead of
    the token URL's; `value`: kept as it is. The value must match `pattern` in full.
    """

    name: str
    pattern: str
    use: Literal["api_base", "token_origin", "value"] = "value"


@dataclass(frozen=True)
class Quirks:
    """How a provider departs from RFC 6749's token endpoint; the defaults are the standard."""

    token_request_format: Literal["form", "json"] = "form"  # noqa: S105 - a format, no secret
    token_params: Mapping[str, str] = field(default_factory=dict)
    refresh_params: Mapping[str, str] = field(default_factory=dict)
    token_headers: Mapping[str, str] = field(default_factory=dict)  # on every token request (Notion-Version)
    refresh_url: str | None = None
    access_token_path: str | None = None
    expires_in_unit: Literal["seconds", "milliseconds"] = "seconds"
    permanent_errors: frozenset[str] = frozenset()
    response_metadata: tuple[MetadataRule, ...] = ()
    callback_metadata: tuple[MetadataRule, ...] = ()


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
    quirks: Quirks = field(default_factory=Quirks)
    certificate_thumbprint: str | None = None  # private_key_jwt: the assertion's x5t#S256 header


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    token_type: str
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: int | None = None  # epoch seconds; None when the provider did not say
    scopes: tuple[str, ...] | None = None  # None when the provider did not say
    id_token: str | None = field(default=None, repr=False)
    metadata: Mapping[str, str] = field(default_factory=dict)  # kept values, never a secret
    redirect_uri: str | None = None  # the one the code was redeemed with, for a refresh that repeats it

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "access_token": self.access_token,
                "token_type": self.token_type,
                "refresh_token": self.refresh_token,
                "expires_at": self.expires_at,
                "scopes": list(self.scopes) if self.scopes is not None else None,
                "id_token": self.id_token,
                "metadata": dict(self.metadata),
                "redirect_uri": self.redirect_uri,
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
            metadata=dict(raw.get("metadata") or {}),
            redirect_uri=raw.get("redirect_uri"),
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
    trace_http()
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


def _at_path(body: Mapping[str, Any], path: str) -> Any:
    value: Any = body
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _error_of(body: Mapping[str, Any]) -> Any:
    """The error code: RFC 6749's `error`, also when an HTTP-200 body says `"ok": false` beside it."""
    error = body.get("error")
    if not error and body.get("ok") is False:
        return "provider_error"
    return error


def normalize_token_response(resp: Any, quirks: Quirks | None = None) -> Any:
    """authlib compliance hook: classify failures and rewrite quirky bodies into the standard shape.

    The token fields are read beside the access token at `access_token_path` (a user token nested under
    `authed_user` brings its own refresh token and lifetime); kept metadata is read from the whole body
    and travels under `_metadata` until it is checked.
    """
    quirks = quirks or Quirks()
    status = resp.status_code
    if status == 429 or status >= 500:
        raise ProviderUnavailableError(f"token endpoint answered HTTP {status}", retry_after=_retry_after(resp.headers))
    body = _body_of(resp)
    error = _error_of(body)
    if error:
        raise ProviderRejectedError(
            str(error)[:100],
            str(body.get("error_description") or "")[:300] or None,
            permanent_errors=quirks.permanent_errors,
        )
    if status >= 400:
        raise ProviderUnavailableError(f"token endpoint answered HTTP {status} without an OAuth error")
    fields: Any = body
    if quirks.access_token_path and "." in quirks.access_token_path:
        fields = _at_path(body, quirks.access_token_path.rsplit(".", 1)[0])
    token_name = (quirks.access_token_path or "access_token").rsplit(".", 1)[-1]
    if not isinstance(fields, Mapping) or not isinstance(fields.get(token_name), str) or not fields[token_name]:
        raise ProviderUnavailableError("token response has no access_token")
    normalized: dict[str, Any] = {"access_token": fields[token_name]}
    normalized["token_type"] = str(fields.get("token_type") or "Bearer")
    for name in ("refresh_token", "id_token"):
        if isinstance(fields.get(name), str) and fields[name]:
            normalized[name] = fields[name]
    expires_in = fields.get("expires_in")
    if (
        quirks.expires_in_unit == "milliseconds"
        and isinstance(expires_in, int | float)
        and not isinstance(expires_in, bool)
    ):
        expires_in = expires_in / 1000
    seconds = expires_in_seconds(expires_in)
    if seconds is not None:
        normalized["expires_in"] = seconds
    scope = fields.get("scope")
    if isinstance(scope, list):
        scope = " ".join(str(s) for s in scope)
    if isinstance(scope, str):
        normalized["scope"] = " ".join(split_scopes(scope))
    metadata = {rule.name: _at_path(body, rule.name) for rule in quirks.response_metadata}
    normalized["_metadata"] = {name: value for name, value in metadata.items() if value is not None}
    resp._content = json.dumps(normalized).encode()
    resp.headers["Content-Type"] = "application/json"
    return resp


def checked_metadata(rule: MetadataRule, value: object, policy: UrlPolicy) -> str:
    """The value if its rule admits it: a string matching the pattern in full and, for a URL, the SSRF guard."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MetadataRefusedError(f"{rule.name} is not a text value")
    text = str(value)
    if len(text) > MAX_METADATA_VALUE_CHARS or not re.fullmatch(rule.pattern, text):
        raise MetadataRefusedError(f"{rule.name} does not match the pattern the connection declares")
    if rule.use != "value":
        try:
            check_url(text, policy)
        except UnsafeUrlError as error:
            raise MetadataRefusedError(f"{rule.name} is refused by the URL guard: {error.message}") from error
        parts = urlsplit(text)
        if parts.username or parts.password or parts.query or parts.fragment:
            raise MetadataRefusedError(f"{rule.name} must be a plain URL")
    return text


def url_template_parts(entry: str) -> tuple[str, str] | None:
    """The kept value's name and the path of an allowed_urls template, or None when `entry` is not one."""
    match = _URL_TEMPLATE.fullmatch(entry)
    if match is None or _DOT_SEGMENT.search(match["path"] or ""):
        return None
    return match["name"], match["path"] or ""


def resolved_allowed_urls(entries: Sequence[str], quirks: Quirks, metadata: Mapping[str, str]) -> tuple[str, ...]:
    """allowed_urls with each template filled in from the kept metadata.

    A template is filled only from a value its rule marks as a URL, that matches the rule's pattern now
    (rules can change after a value was kept) and that is a plain URL; the result must keep the value's
    host. Anything else leaves the entry out, so a value can never widen where the token is sent. The
    value passed the SSRF guard when it was kept, and every call passes it again.
    """
    rules = {rule.name: rule for rule in quirks.response_metadata + quirks.callback_metadata if rule.use != "value"}
    resolved: list[str] = []
    for entry in entries:
        parts = url_template_parts(entry) if entry.startswith("{") else None
        if parts is None:
            if not entry.startswith("{"):
                resolved.append(entry)
            continue
        rule, value = rules.get(parts[0]), metadata.get(parts[0])
        if rule is None or not isinstance(value, str) or not re.fullmatch(rule.pattern, value):
            continue
        base = urlsplit(value)
        url = value.rstrip("/") + parts[1]
        if (
            base.scheme not in ("https", "http")
            or not base.hostname
            or base.username is not None
            or base.password is not None
            or base.query
            or base.fragment
            or "?" in value
            or "#" in value
            or urlsplit(url).netloc != base.netloc
        ):
            continue
        resolved.append(url)
    return tuple(resolved)


def keep_callback_metadata(quirks: Quirks, params: Mapping[str, str], policy: UrlPolicy) -> dict[str, str]:
    """The callback's query parameters the connection keeps, each checked before anything is sent."""
    return {
        rule.name: checked_metadata(rule, params[rule.name], policy)
        for rule in quirks.callback_metadata
        if params.get(rule.name) is not None
    }


def _token_origin_url(url: str, quirks: Quirks, metadata: Mapping[str, str], policy: UrlPolicy) -> str:
    """`url` moved to the origin a kept `token_origin` value names (checked again: rules can change)."""
    for rule in quirks.callback_metadata + quirks.response_metadata:
        if rule.use == "token_origin" and rule.name in metadata:
            origin = urlsplit(checked_metadata(rule, metadata[rule.name], policy))
            parts = urlsplit(url)
            return urlunsplit((origin.scheme, origin.netloc, parts.path, parts.query, ""))
    return url


def _kept_response_metadata(
    token: Mapping[str, Any], quirks: Quirks, policy: UrlPolicy, *, strict: bool
) -> dict[str, str]:
    """Checked response metadata. Strict (an exchange) refuses a bad value; a refresh drops it, since the
    provider may already have rotated the refresh token the answer carries."""
    raw = token.get("_metadata") or {}
    kept: dict[str, str] = {}
    for rule in quirks.response_metadata:
        if rule.name not in raw:
            continue
        try:
            kept[rule.name] = checked_metadata(rule, raw[rule.name], policy)
        except MetadataRefusedError:
            if strict:
                raise
    return kept


def _extra_params(
    params: Mapping[str, str], *, redirect_uri: str | None = None, metadata: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A quirk's body parameters with their placeholders filled in; one without a value to fill is left out."""
    extra: dict[str, str] = {}
    for name, value in params.items():
        if value == REDIRECT_URI_PLACEHOLDER:
            if redirect_uri is not None and name.lower() not in PROTOCOL_TOKEN_PARAMS - {"redirect_uri"}:
                extra[name] = redirect_uri
        elif name.lower() in PROTOCOL_TOKEN_PARAMS:
            continue
        elif (placeholder := CALLBACK_PLACEHOLDER.fullmatch(value)) is not None:
            kept = (metadata or {}).get(placeholder[1])
            if kept is not None:
                extra[name] = str(kept)
        else:
            extra[name] = value
    return extra


def _extra_headers(quirks: Quirks) -> dict[str, str]:
    return {name: value for name, value in quirks.token_headers.items() if name.lower() not in PROTOCOL_TOKEN_HEADERS}


def _token_set(
    token: dict[str, Any],
    *,
    fallback_scopes: tuple[str, ...] | None,
    now: float,
    metadata: Mapping[str, str],
    redirect_uri: str | None = None,
) -> TokenSet:
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
        metadata=dict(metadata),
        redirect_uri=redirect_uri,
    )


def signing_key(secret: str) -> tuple[Any, str, dict[str, str]]:
    """The private key of private_key_jwt (a PEM or a JWK; RSA or EC), its algorithm and the header it names.

    A JWK's `kid` and `x5t#S256` (the certificate thumbprint some providers match the key by) go into the
    assertion's header. Raises ValueError for anything that is not a private RSA or EC key.
    """
    from joserfc.jwk import ECKey, RSAKey, import_key

    text = secret.strip()
    try:
        data: Any = json.loads(text) if text.startswith("{") else text
    except ValueError as error:
        raise ValueError("the private key is neither a PEM nor a JWK") from error
    key: Any = None
    for key_type in ("RSA", "EC"):
        try:
            key = import_key(data, key_type)
            break
        except Exception:  # noqa: BLE001, S112 - joserfc raises several types for a key of the other kind
            continue
    if not isinstance(key, RSAKey | ECKey) or not key.is_private:
        raise ValueError("the private key must be a private RSA or EC key (PEM or JWK)")
    alg = "RS256" if isinstance(key, RSAKey) else _EC_ALGORITHMS.get(str(key.curve_name), "")
    if not alg:
        raise ValueError("the EC key must be on P-256, P-384 or P-521")
    header = {"alg": alg}
    if isinstance(data, dict):
        header.update({name: str(data[name]) for name in ("kid", "x5t#S256") if data.get(name)})
    return key, alg, header


def client_assertion(client: ClientSettings, audience: str) -> str:
    """A fresh RFC 7523 assertion for one request to `audience` (the URL it is sent to)."""
    from authlib.oauth2.rfc7523 import client_secret_jwt_sign, private_key_jwt_sign
    from joserfc.jwk import OctKey

    secret = client.client_secret or ""
    try:
        if client.auth_method == "private_key_jwt":
            key, alg, header = signing_key(secret)
            if client.certificate_thumbprint:
                header["x5t#S256"] = client.certificate_thumbprint
            sign = private_key_jwt_sign
        else:
            key, alg, header, sign = OctKey.import_key(secret), "HS256", {"alg": "HS256"}, client_secret_jwt_sign
    except ValueError as error:
        raise ProviderRejectedError("invalid_client", f"the client's key cannot sign: {error}") from error
    signed = sign(key, client.client_id, audience, alg=alg, header=header, expires_in=ASSERTION_LIFETIME_SECONDS)
    return signed.decode() if isinstance(signed, bytes) else str(signed)


class _AssertionAuth:
    """authlib client-auth method: adds a fresh assertion to each form-encoded token request."""

    def __init__(self, client: ClientSettings) -> None:
        self.name = client.auth_method
        self.client = client

    def __call__(self, auth: Any, method: str, uri: str, headers: Any, body: str) -> tuple[str, Any, str]:
        from authlib.common.urls import add_params_to_qs

        params = [("client_assertion_type", ASSERTION_TYPE), ("client_assertion", client_assertion(self.client, uri))]
        return uri, headers, add_params_to_qs(body or "", params)


def _session(client: ClientSettings, policy: UrlPolicy) -> Any:
    from authlib.integrations.requests_client import OAuth2Session

    session = OAuth2Session(
        client_id=client.client_id,
        client_secret=client.client_secret,
        token_endpoint_auth_method=client.auth_method,
    )
    if client.auth_method in ASSERTION_METHODS:
        session.register_client_auth_method(_AssertionAuth(client))
        session.revocation_endpoint_auth_method = client.auth_method  # a revocation signs its own assertion
    _bounded(mount_guard(session, policy))

    def normalize(resp: Any) -> Any:
        return normalize_token_response(resp, client.quirks)

    session.register_compliance_hook("access_token_response", normalize)
    session.register_compliance_hook("refresh_token_response", normalize)
    return session


def _post_token_request(
    client: ClientSettings, session: Any, url: str, params: dict[str, str], timeout: float
) -> dict[str, Any]:
    """One token request: authlib builds the standard form body; a JSON-only endpoint gets the same
    parameters (and, for client_secret_post, the client's credentials) as a JSON object."""
    from authlib.oauth2.client import DEFAULT_HEADERS

    extra_headers = _extra_headers(client.quirks)
    if client.quirks.token_request_format == "form":  # noqa: S105 - a format, no secret
        headers = {**DEFAULT_HEADERS, **extra_headers}
        if params["grant_type"] == "refresh_token":
            rest = {k: v for k, v in params.items() if k not in ("grant_type", "refresh_token")}
            return dict(
                session.refresh_token(
                    url,
                    refresh_token=params["refresh_token"],
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,
                    **rest,
                )
            )
        return dict(session.fetch_token(url, headers=headers, timeout=timeout, allow_redirects=False, **params))
    body = dict(params)
    auth = None
    if client.auth_method == "client_secret_basic":
        auth = session.client_auth("client_secret_basic")
    else:
        body["client_id"] = client.client_id
        if client.auth_method == "client_secret_post" and client.client_secret is not None:
            body["client_secret"] = client.client_secret
        if client.auth_method in ASSERTION_METHODS:
            body["client_assertion_type"] = ASSERTION_TYPE
            body["client_assertion"] = client_assertion(client, url)
    resp = session.post(
        url,
        json=body,
        auth=auth,
        withhold_token=True,
        headers={**extra_headers, "Accept": "application/json"},
        timeout=timeout,
        allow_redirects=False,
    )
    return dict(json.loads(normalize_token_response(resp, client.quirks).content))


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
    callback_metadata: Mapping[str, str] | None = None,
) -> TokenSet:
    """Redeem a code. `callback_metadata` are the callback's kept values (keep_callback_metadata checked
    them); a `token_origin` among them moves the request to that host."""
    kept = dict(callback_metadata or {})
    url = _token_origin_url(client.token_url, client.quirks, kept, policy)
    session = _session(client, policy)
    params = _extra_params(client.quirks.token_params, redirect_uri=redirect_uri, metadata=kept)
    params.update({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri})
    if code_verifier:
        params["code_verifier"] = code_verifier
    now = time.time()
    token = _call_token_endpoint(lambda: _post_token_request(client, session, url, params, timeout), timeout)
    kept.update(_kept_response_metadata(token, client.quirks, policy, strict=True))
    return _token_set(token, fallback_scopes=client.scopes, now=now, metadata=kept, redirect_uri=redirect_uri)


def refresh(client: ClientSettings, current: TokenSet, *, policy: UrlPolicy, timeout: float) -> TokenSet:
    """Use the refresh token once. A provider that sends no new refresh token keeps the old one valid."""
    if not current.refresh_token:
        raise ProviderRejectedError("invalid_grant", "no refresh token is stored")
    url = _token_origin_url(client.quirks.refresh_url or client.token_url, client.quirks, current.metadata, policy)
    session = _session(client, policy)
    params = _extra_params(client.quirks.refresh_params, redirect_uri=current.redirect_uri, metadata=current.metadata)
    params.update({"grant_type": "refresh_token", "refresh_token": current.refresh_token})
    now = time.time()
    token = _call_token_endpoint(lambda: _post_token_request(client, session, url, params, timeout), timeout)
    metadata = {**current.metadata, **_kept_response_metadata(token, client.quirks, policy, strict=False)}
    fresh = _token_set(
        token, fallback_scopes=current.scopes, now=now, metadata=metadata, redirect_uri=current.redirect_uri
    )
    if not fresh.refresh_token:
        fresh = TokenSet(
            access_token=fresh.access_token,
            token_type=fresh.token_type,
            refresh_token=current.refresh_token,
            expires_at=fresh.expires_at,
            scopes=fresh.scopes,
            id_token=fresh.id_token or current.id_token,
            metadata=fresh.metadata,
            redirect_uri=fresh.redirect_uri,
        )
    return fresh


def client_credentials(client: ClientSettings, *, policy: UrlPolicy, timeout: float) -> TokenSet:
    """The client-credentials grant (RFC 6749 §4.4): a token for the app itself, no browser involved."""
    session = _session(client, policy)
    params = _extra_params(client.quirks.token_params)
    params["grant_type"] = "client_credentials"
    if client.scopes:
        params["scope"] = client.scope_delimiter.join(client.scopes)
    now = time.time()
    token = _call_token_endpoint(
        lambda: _post_token_request(client, session, client.token_url, params, timeout), timeout
    )
    metadata = _kept_response_metadata(token, client.quirks, policy, strict=True)
    return _token_set(token, fallback_scopes=client.scopes, now=now, metadata=metadata)
