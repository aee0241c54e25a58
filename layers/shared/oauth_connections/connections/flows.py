"""The authorization-code flow: start (authenticated), redirect to the provider, and the callback.

The callback URL is public, so every step assumes an attacker: the redirect handle and the state are
single-use and expire after ten minutes (checked here, not left to the TTL sweeper), the state's ten
minutes counted from the redirect to the provider, so the sign-in there gets all of them; the state is
bound to the browser that started the flow by an HttpOnly cookie of its own (named after the state, so
several sign-ins in one browser do not overwrite each other's); the provider's `iss` is checked
(RFC 9207); PKCE S256 protects the code; the return URL must be under an allowed frontend origin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from oauth_connections.connections import activity, grants, tokens
from oauth_connections.core.caller import Caller
from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import Settings
from oauth_connections.core.errors import ConflictError, InvalidRequestError, NotFoundError, ServiceError
from oauth_connections.core.ids import CONNECTION_ID_PREFIX, is_id
from oauth_connections.core.observability import logger
from oauth_connections.oauth import token_endpoint
from oauth_connections.security.crypto import EncryptionContext, envelope_for
from oauth_connections.security.policy import url_policy
from oauth_connections.storage.binding import bind_table
from oauth_connections.storage.connections import CONNECTIONS, ConnectionRecord
from oauth_connections.storage.flows import (
    FLOW_PREFIX,
    FLOW_SORT_KEY,
    STATE_PREFIX,
    FlowRecord,
    advance_flow,
    consume_flow,
    insert_flow,
    load_flow,
)

FLOW_LIFETIME = timedelta(minutes=10)
AUTHORIZE_PATH = "/oauth2/authorize"
COOKIE_NAME_SECURE = "__Host-oauth_flow"
COOKIE_NAME_LOOPBACK = "oauth_flow"
DISPLAYS = ("page", "popup")
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class FlowError(ServiceError):
    """A failed flow step. With a return_url the browser goes back to the frontend; without one the
    state was unknown and the callback shows an error page."""

    status = 400

    def __init__(
        self,
        code: str,
        message: str,
        *,
        return_url: str | None = None,
        display: str = "page",
        connection_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.return_url = return_url
        self.display = display
        self.connection_id = connection_id


@dataclass(frozen=True)
class FlowCompleted:
    """Where the browser goes after a successful callback, and how the flow was opened (page or popup)."""

    return_url: str
    display: str
    connection_id: str


@dataclass(frozen=True)
class AuthorizationStart:
    redirect_url: str
    expires_at: datetime


@dataclass(frozen=True)
class DirectConnection:
    """A client-credentials connection connects at once, without a browser."""

    status: str
    token_expires_at: datetime | None
    granted_scopes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ProviderRedirect:
    location: str
    cookie_name: str
    cookie_value: str
    max_age: int


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def cookie_name(settings: Settings, state: str) -> str:
    """The binding cookie of one flow: its own name, so concurrent flows in one browser keep theirs."""
    base = COOKIE_NAME_SECURE if settings.cookie_secure else COOKIE_NAME_LOOPBACK
    return f"{base}_{_digest(state)[:16]}"


def return_url_allowed(url: str, allowed_origins: tuple[str, ...]) -> bool:
    if len(url) > 2048 or any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return False
    if "\\" in url or parts.fragment:
        return False
    port = port or (443 if parts.scheme == "https" else 80)
    for origin in allowed_origins:
        try:
            allowed = urlsplit(origin.replace(":*", ""))
        except ValueError:
            continue
        any_port = origin.endswith(":*")
        allowed_port = allowed.port or (443 if allowed.scheme == "https" else 80)
        if (
            allowed.scheme == parts.scheme
            and (allowed.hostname or "").lower() == parts.hostname.lower()
            and (any_port or allowed_port == port)
        ):
            return True
    return False


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def _flow_context(record: FlowRecord) -> EncryptionContext:
    return EncryptionContext(record.tenant_id, record.connection_id, "flow")


# ------------------------------------------------------------------ 1. start (authenticated)


def start_authorization(
    settings: Settings, caller: Caller, connection_id: str, return_url: str | None, display: str = "page"
) -> AuthorizationStart | DirectConnection:
    if not is_id(connection_id, CONNECTION_ID_PREFIX):
        raise NotFoundError("connection not found")
    bind_table(settings.connections_table_name)
    connection = CONNECTIONS.load(caller.tenant_id, connection_id)
    if connection.grant_type == "client_credentials":
        direct = connect_with_client_credentials(settings, connection)
        activity.record_activity(
            settings,
            caller.tenant_id,
            connection_id,
            "connection.connected",
            actor=caller.user_id,
            trigger="api",
            granted_scopes=direct.granted_scopes,
        )
        return direct
    if not return_url:
        raise InvalidRequestError(
            "return_url is required: where the browser goes back to after the provider", code="return_url_required"
        )
    if not return_url_allowed(return_url, settings.allowed_return_origins):
        raise InvalidRequestError("return_url is not under an allowed frontend origin", code="invalid_return_url")
    if not connection.authorization_url:
        raise InvalidRequestError("the connection has no authorization_url", code="not_authorizable")
    handle = secrets.token_urlsafe(32)
    expires_at = utcnow() + FLOW_LIFETIME
    insert_flow(
        FlowRecord(
            f"{FLOW_PREFIX}{_digest(handle)}",
            FLOW_SORT_KEY,
            tenant_id=caller.tenant_id,
            connection_id=connection_id,
            return_url=return_url,
            redirect_uri=caller.callback_url,
            status="created",
            display=display,
            grant_fingerprint=grants.fingerprint(connection),
            user_id=caller.user_id,
            expires_at=expires_at,
            expires_at_epoch=expires_at,
        )
    )
    base = caller.callback_url.rsplit("/oauth2/", 1)[0]
    logger.info("authorization started", extra={"tenant_id": caller.tenant_id, "connection_id": connection_id})
    activity.record_activity(
        settings, caller.tenant_id, connection_id, "authorization.started", actor=caller.user_id, trigger="api"
    )
    return AuthorizationStart(
        redirect_url=f"{base}{AUTHORIZE_PATH}?{urlencode({'flow': handle})}", expires_at=expires_at
    )


# ------------------------------------------------------------------ 2. redirect to the provider (public)


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def authorization_location(
    connection: ConnectionRecord, *, redirect_uri: str, state: str, challenge: str | None
) -> str:
    parts = urlsplit(connection.authorization_url or "")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    params.update(connection.extra_authorize_params or {})
    params.update(
        {"response_type": "code", "client_id": connection.client_id, "redirect_uri": redirect_uri, "state": state}
    )
    if connection.scopes:
        params["scope"] = connection.scope_delimiter.join(connection.scopes)
    if challenge:
        params.update({"code_challenge": challenge, "code_challenge_method": "S256"})
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))


def begin_redirect(settings: Settings, handle: str | None) -> ProviderRedirect:
    if not handle or len(handle) > 128:
        raise FlowError("invalid_flow", "This sign-in link is not valid.")
    bind_table(settings.connections_table_name)
    started = load_flow(f"{FLOW_PREFIX}{_digest(handle)}")
    if started is None or started.status != "created":
        raise FlowError("invalid_flow", "This sign-in link is not valid or was already used.")
    if started.expires_at <= utcnow():
        raise FlowError("expired_flow", "This sign-in link has expired. Start again from the app.")
    try:
        connection = CONNECTIONS.load(started.tenant_id, started.connection_id)
    except NotFoundError as error:
        raise FlowError("connection_not_found", "The connection no longer exists.") from error
    if started.grant_fingerprint != grants.fingerprint(connection):
        raise FlowError("connection_changed", "The connection's settings changed since this sign-in started.")
    state = secrets.token_urlsafe(32)
    cookie = secrets.token_urlsafe(32)
    verifier, challenge = _pkce_pair() if connection.use_pkce else (None, None)
    state_expires_at = utcnow() + FLOW_LIFETIME
    redirected = FlowRecord(
        f"{STATE_PREFIX}{_digest(state)}",
        FLOW_SORT_KEY,
        tenant_id=started.tenant_id,
        connection_id=started.connection_id,
        return_url=started.return_url,
        redirect_uri=started.redirect_uri,
        status="redirected",
        display=started.display,
        cookie_hash=_digest(cookie),
        grant_fingerprint=started.grant_fingerprint,
        user_id=started.user_id,
        expires_at=state_expires_at,
        expires_at_epoch=state_expires_at,
    )
    if verifier:
        redirected.code_verifier_ciphertext = envelope_for(settings.encryption_key_arn).encrypt(
            verifier.encode(), _flow_context(redirected)
        )
    if not advance_flow(started, redirected):
        raise FlowError("invalid_flow", "This sign-in link was already used.")
    location = authorization_location(connection, redirect_uri=started.redirect_uri, state=state, challenge=challenge)
    max_age = max(1, int((state_expires_at - utcnow()).total_seconds()))
    logger.info(
        "redirecting to provider", extra={"tenant_id": started.tenant_id, "connection_id": started.connection_id}
    )
    return ProviderRedirect(
        location=location, cookie_name=cookie_name(settings, state), cookie_value=cookie, max_age=max_age
    )


# ------------------------------------------------------------------ 3. callback (public)


def _clean(value: str | None, limit: int) -> str:
    return "".join(ch for ch in (value or "") if ch.isprintable())[:limit]


def complete_callback(settings: Settings, params: dict[str, str], cookies: dict[str, str]) -> FlowCompleted:
    """Finish a flow; returns where to send the browser. Raises FlowError for every failure."""
    state = params.get("state")
    if not state or len(state) > 256:
        raise FlowError("invalid_state", "This sign-in response is missing its state.")
    bind_table(settings.connections_table_name)
    flow = load_flow(f"{STATE_PREFIX}{_digest(state)}")
    if flow is None:
        raise FlowError("invalid_state", "This sign-in response is unknown or has expired.")
    back = flow.return_url
    display = flow.display or "page"
    context = {"tenant_id": flow.tenant_id, "connection_id": flow.connection_id}

    def fail(code: str, message: str, *, log: bool = True) -> FlowError:
        if log:
            logger.warning("authorization failed", extra=context | {"error_code": code})
        return FlowError(code, message, return_url=back, display=display, connection_id=flow.connection_id)

    if flow.expires_at <= utcnow():
        raise fail("expired_state", "The sign-in took too long; start again.")
    if flow.status != "redirected":
        raise fail("state_already_used", "This sign-in response was already used.")
    cookie = cookies.get(cookie_name(settings, state), "")
    if not cookie or not hmac.compare_digest(_digest(cookie), flow.cookie_hash or ""):
        raise fail("browser_mismatch", "The sign-in was started in another browser.")
    if not consume_flow(flow):
        raise fail("state_already_used", "This sign-in response was already used.")

    try:
        connection = CONNECTIONS.load(flow.tenant_id, flow.connection_id, consistent=True)
    except NotFoundError as error:
        raise fail("connection_not_found", "The connection no longer exists.") from error
    # The code goes only to the token endpoint, with the secret, that the flow was started for.
    if flow.grant_fingerprint != grants.fingerprint(connection):
        raise fail("connection_changed", "The connection's settings changed since this sign-in started.")

    iss = params.get("iss")
    if connection.issuer and iss is not None and iss != connection.issuer:
        raise fail("issuer_mismatch", "The response came from another issuer than the connection's provider.")
    if connection.iss_parameter_supported and iss is None:
        raise fail("issuer_missing", "The provider's response lacks its issuer.")
    if params.get("error"):
        code = params["error"] if _ERROR_CODE.match(params["error"]) else "provider_error"
        raise fail(code, _clean(params.get("error_description"), 200) or code, log=False)
    code_value = params.get("code")
    if not code_value or len(code_value) > 4096:
        raise fail("invalid_request", "The provider's response has no authorization code.")

    envelope = envelope_for(settings.encryption_key_arn)
    verifier = (
        envelope.decrypt(flow.code_verifier_ciphertext, _flow_context(flow)).decode()
        if flow.code_verifier_ciphertext
        else None
    )
    client = tokens.client_settings(settings, connection)
    try:
        # The callback's values are checked before the code goes anywhere: a forged regional host never gets it.
        kept = token_endpoint.keep_callback_metadata(client.quirks, params, url_policy())
        token_set = token_endpoint.exchange_code(
            client,
            code=code_value,
            redirect_uri=flow.redirect_uri,
            code_verifier=verifier,
            policy=url_policy(),
            timeout=settings.outbound_timeout_seconds,
            callback_metadata=kept,
        )
    except token_endpoint.ProviderRejectedError as error:
        logger.warning("code exchange refused", extra=context | {"error_code": error.error})
        raise fail(error.error, error.description or error.error, log=False) from error
    except token_endpoint.ProviderUnavailableError as error:
        logger.warning("code exchange failed", extra=context | {"reason": error.message})
        raise fail("provider_unavailable", "The provider could not be reached; try again.", log=False) from error

    try:
        tokens.store_connected(settings, flow.tenant_id, flow.connection_id, token_set, grant=flow.grant_fingerprint)
    except (NotFoundError, ConflictError) as error:
        code = "connection_changed" if error.code == "connection_changed" else "connection_not_found"
        raise fail(code, "The connection changed or no longer exists.") from error
    logger.info("connection connected", extra=context)
    activity.record_activity(
        settings,
        flow.tenant_id,
        flow.connection_id,
        "connection.connected",
        actor=flow.user_id,
        trigger="api",
        granted_scopes=token_set.scopes,
    )
    _test_after_connect(settings, connection, token_set)
    return FlowCompleted(
        with_query(back, status="connected", connection_id=flow.connection_id), display, flow.connection_id
    )


def connect_with_client_credentials(settings: Settings, connection: ConnectionRecord) -> DirectConnection:
    client = tokens.client_settings(settings, connection)
    try:
        token_set = token_endpoint.client_credentials(
            client, policy=url_policy(), timeout=settings.outbound_timeout_seconds
        )
    except token_endpoint.ProviderRejectedError as error:
        raise InvalidRequestError(
            f"the provider refused the client credentials: {error.error}", code=error.error
        ) from error
    tokens.store_connected(
        settings, connection.tenant_id, connection.connection_id, token_set, grant=grants.fingerprint(connection)
    )
    logger.info(
        "connection connected", extra={"tenant_id": connection.tenant_id, "connection_id": connection.connection_id}
    )
    _test_after_connect(settings, connection, token_set)
    expires = datetime.fromtimestamp(token_set.expires_at, UTC) if token_set.expires_at else None
    return DirectConnection(status="connected", token_expires_at=expires, granted_scopes=token_set.scopes)


def _test_after_connect(settings: Settings, connection: ConnectionRecord, token_set: token_endpoint.TokenSet) -> None:
    """A connection with a test_url is tested once with its new tokens; the engine loads only then."""
    if not connection.test_url:
        return
    from oauth_connections.connections import api_calls

    api_calls.test_after_connect(settings, connection.tenant_id, connection.connection_id, token_set)
