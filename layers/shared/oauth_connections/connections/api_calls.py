"""CallApiFunction's logic: one authorized call, for a function in any language, by the client's call engine.

The engine (oauth_connections_client.calls, shipped as the ClientLayer) holds the rules AuthorizedSession
follows too. This module adds what only the service can: the token read in-process (one consistent read;
a refresh only after a 401), the API base a relative `path` is under, and the rate-limit window kept on
the connection, so that once a provider answered 429 every caller learns it without calling again. The
connection test (POST /connections/{id}/test) is one such call, of the connection's test_url.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from datetime import timedelta
from functools import cache
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, ValidationError, model_validator

import oauth_connections_client as client
from oauth_connections.connections import activity
from oauth_connections.connections.models import ConnectionTestResult
from oauth_connections.connections.refresh import TokenError
from oauth_connections.connections.retrieval import TenantId, allowed_urls_of, current_tokens, load_for_token
from oauth_connections.connections.usage import mark_used
from oauth_connections.core import aws, budget
from oauth_connections.core.caller import Caller
from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import Settings
from oauth_connections.core.errors import ConflictError
from oauth_connections.core.observability import logger, trace_http
from oauth_connections.oauth.token_endpoint import TokenSet
from oauth_connections.security.policy import url_policy
from oauth_connections.storage import connections as store
from oauth_connections.storage.connections import CONNECTIONS, ConnectionRecord
from oauth_connections_client import calls

TIMEOUT_RESERVE_SECONDS = 2.0  # the answer, the window's write and the log line after the deadline
MAX_TIMEOUT_SECONDS = 25.0
# A synchronous invocation answers at most 6 MB; base64 grows a body by a third.
MAX_RESPONSE_BYTES = 4_000_000
TOKEN_MIN_VALID_SECONDS = 30
TEST_TIMEOUT_SECONDS = 10.0
TEST_MAX_RESPONSE_BYTES = 64 * 1024

Method = Literal["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]


class Expect(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    status: Annotated[list[Annotated[int, Field(ge=100, le=599)]], Field(min_length=1, max_length=50)] | None = None
    body_pattern: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = None


class CallApiRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)

    tenant_id: TenantId
    connection_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    method: Method
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    path: Annotated[str, StringConstraints(max_length=2048)] | None = None
    query: dict[str, str | list[str]] | None = None
    headers: dict[str, str] = Field(default_factory=dict, max_length=100)
    json_body: JsonValue = Field(default=None, alias="json")
    body: str | None = None
    body_base64: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_SECONDS)] = 10.0
    max_response_bytes: Annotated[int, Field(ge=1, le=MAX_RESPONSE_BYTES)] = 1_000_000
    truncate: bool = False
    expect: Expect | None = None
    idempotency_key: (
        Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")] | None
    ) = None
    correlation_id: Annotated[str, StringConstraints(max_length=128)] | None = None

    @model_validator(mode="after")
    def _one_target_one_body(self) -> Self:
        if (self.url is None) == (self.path is None):
            raise ValueError("give either url (absolute) or path (relative to the connection's API base)")
        if sum(value is not None for value in (self.json_body, self.body, self.body_base64)) > 1:
            raise ValueError("give at most one of json, body and body_base64")
        return self

    def payload(self) -> tuple[bytes | None, dict[str, str]]:
        """The request body as bytes, and the headers with a JSON content type when `json` was given."""
        headers = dict(self.headers)
        if self.json_body is not None:
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
            return json.dumps(self.json_body, separators=(",", ":")).encode(), headers
        if self.body is not None:
            return self.body.encode(), headers
        if self.body_base64 is not None:
            try:
                return base64.b64decode(self.body_base64, validate=True), headers
            except binascii.Error as error:
                raise TokenError("invalid_request", "invalid request: body_base64 is not base64") from error
        return None, headers


def parse_request(event: Any) -> CallApiRequest:
    try:
        return CallApiRequest.model_validate(event)
    except ValidationError as error:
        problems = sorted(
            {".".join(str(p) for p in e["loc"]) or e["msg"].removeprefix("Value error, ") for e in error.errors()}
        )
        raise TokenError("invalid_request", f"invalid request: {'; '.join(problems)}") from error


def target_url(record: ConnectionRecord, request: CallApiRequest) -> str:
    """The absolute URL: `url` as given, or `path` below the connection's API base (its first allowed URL)."""
    if request.url is not None:
        return request.url
    allowed = allowed_urls_of(record)
    if not allowed:
        raise TokenError("url_not_allowed", "the connection has no allowed_urls, so a path has no API base")
    return allowed[0].rstrip("/") + "/" + (request.path or "").lstrip("/")


@cache
def _session(allow_insecure_loopback: bool) -> Any:
    """One pooled session per execution environment: the engine keeps no cookies, so tenants share nothing."""
    trace_http()
    return calls.new_session(client.UrlPolicy(allow_insecure_loopback=allow_insecure_loopback))


class _ConnectionTokens:
    """The engine's token source in-process: the record already read, refreshed only when asked after a 401.
    `reason` and `actor` name what asked for such a refresh in the activity log (a tenant's test, its user)."""

    def __init__(
        self, settings: Settings, record: ConnectionRecord, *, reason: str | None = None, actor: str | None = None
    ) -> None:
        self.settings = settings
        self.record = record
        self.given = False
        self.reason, self.actor = reason, actor

    def __call__(self, *, force_refresh: bool) -> client.AccessToken:
        self.given = True
        current = current_tokens(
            self.settings,
            self.record,
            TOKEN_MIN_VALID_SECONDS,
            force_refresh=force_refresh,
            reason=self.reason,
            actor=self.actor,
        )
        return client.AccessToken(
            access_token=current.access_token,
            token_type=current.token_type,
            expires_at=None,
            scopes=(),
            allowed_urls=allowed_urls_of(self.record, current),
        )


def call_api(settings: Settings, request: CallApiRequest) -> dict[str, Any]:
    """Make the call; raises TokenError for the token's codes and the engine's errors for the call's."""
    record = load_for_token(settings, request.tenant_id, request.connection_id)
    url = target_url(record, request)
    logger.append_keys(method=request.method, api_host=urlsplit(url).hostname)
    body, headers = request.payload()
    expect = request.expect
    api_call = calls.ApiCall(
        method=request.method,
        url=url,
        query=request.query,
        headers=headers,
        body=body,
        timeout_seconds=budget.bounded(request.timeout_seconds, reserve=TIMEOUT_RESERVE_SECONDS),
        max_response_bytes=request.max_response_bytes,
        truncate=request.truncate,
        expect=calls.Expectation(tuple(expect.status or ()), expect.body_pattern) if expect else None,
        idempotency_key=request.idempotency_key,
    )
    source = _ConnectionTokens(settings, record)
    try:
        return _send(settings, record, api_call, source)
    finally:
        if source.given:  # a function used the connection (a tenant's test is no use)
            mark_used(record)


def _send(
    settings: Settings, record: ConnectionRecord, api_call: calls.ApiCall, source: calls.TokenSource
) -> dict[str, Any]:
    """The engine's call with the connection's token, inside its rate-limit window's rule."""
    window = rate_limit_error(record)
    if window is not None:
        raise window
    if api_call.timeout_seconds <= 0:
        raise client.CallTimeoutError("the invocation has no time left for the call")
    try:
        return calls.call(_session(url_policy().allow_insecure_loopback), api_call, source)
    except client.RateLimitedError as error:
        until = utcnow() + timedelta(seconds=error.retry_after or calls.DEFAULT_RETRY_AFTER_SECONDS)
        store.open_rate_limit_window(record, until)
        raise


def run_connection_test(settings: Settings, caller: Caller, connection_id: str) -> ConnectionTestResult:
    """GET the connection's test_url with its token, by the same engine and rules; the outcome is kept.

    Only the outcome is: the answer's body and headers are read (up to TEST_MAX_RESPONSE_BYTES) and dropped.
    """
    record = load_for_token(settings, caller.tenant_id, connection_id)
    if not record.test_url:
        raise ConflictError("the connection has no test_url to call", code="no_test_url")
    result = _test(settings, record, _ConnectionTokens(settings, record, reason="test", actor=caller.user_id))
    activity.record_activity(
        settings,
        caller.tenant_id,
        connection_id,
        "connection.tested",
        actor=caller.user_id,
        trigger="api",
        ok=result.ok,
        status=result.status,
        error=result.error,
    )
    return result


def test_after_connect(settings: Settings, tenant_id: str, connection_id: str, token_set: TokenSet) -> None:
    """Right after a Connect: test the connection once with the tokens just obtained (no decryption).

    A failed test leaves the connection connected and says so in last_test; a storage outage costs the
    test's record, never the Connect.
    """
    try:
        record = CONNECTIONS.load(tenant_id, connection_id, consistent=True)
        if record.test_url:
            _test(settings, record, _JustObtained(record, token_set))
    except Exception as error:
        if not aws.is_unavailable(error):
            raise
        logger.warning("connection test after connect not recorded: storage unavailable")


def _test(settings: Settings, record: ConnectionRecord, source: calls.TokenSource) -> ConnectionTestResult:
    api_call = calls.ApiCall(
        method="GET",
        url=record.test_url or "",
        timeout_seconds=budget.bounded(TEST_TIMEOUT_SECONDS, reserve=TIMEOUT_RESERVE_SECONDS),
        max_response_bytes=TEST_MAX_RESPONSE_BYTES,
        truncate=True,
    )
    started = utcnow()
    status: int | None = None
    error_code: str | None = None
    try:
        status = int(_send(settings, record, api_call, source)["status"])
    except TokenError as error:
        if error.code in ("not_connected", "reauthorization_required"):
            raise
        error_code = error.code
    except (client.TokenServiceError, client.UnsafeUrlError) as error:
        error_code = calls.error_body(error)["error"]["code"]
    result = ConnectionTestResult(
        ok=status is not None and 200 <= status < 300,
        status=status,
        elapsed_ms=round((utcnow() - started).total_seconds() * 1000),
        checked_at=started,
        error=error_code,
    )
    store.record_test(record, result.model_dump(mode="json"))
    logger.info("connection tested", extra={"ok": result.ok, "status": status, "error_code": error_code})
    return result


class _JustObtained:
    """The tokens a Connect just obtained: a 401 gets no refresh (they are as new as tokens get)."""

    def __init__(self, record: ConnectionRecord, token_set: TokenSet) -> None:
        self.token = client.AccessToken(
            token_set.access_token, token_set.token_type, None, (), allowed_urls_of(record, token_set)
        )

    def __call__(self, *, force_refresh: bool) -> client.AccessToken:
        return self.token


def rate_limit_error(record: ConnectionRecord) -> client.RateLimitedError | None:
    until = record.rate_limited_until
    now = utcnow()
    if until is None or until <= now:
        return None
    return client.RateLimitedError(
        "the provider answered 429 recently; not calling before its Retry-After ends",
        retry_after=max(1, math.ceil((until - now).total_seconds())),
    )
