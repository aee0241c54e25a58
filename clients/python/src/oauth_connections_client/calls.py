"""The one call engine: how a request carrying a connection's token is sent, whoever sends it.

Two entry points use it. AuthorizedSession (the token from GetTokenFunction) sends through `send`; the
service's CallApiFunction (the token read in-process) through `call`, which adds the overall deadline,
the bounded read, the `expect` check and the JSON answer. The rules live here once:

- the URL and every redirect hop must be under the connection's allowed_urls and pass the SSRF guard.
  The service fills an entry such as `{instance_url}/services/` in from the connection's kept URL before
  it hands the token out; an entry that is not a URL allows nothing.
  Redirects are followed here, one hop at a time, so the token is never sent anywhere else; a hop off
  the allowed URLs is not followed (UrlNotAllowedError).
- the caller cannot set Authorization, Host, Cookie, message framing or hop-by-hop headers, and no
  cookie is kept between calls (one process serves many tenants and connections).
- a 401 forces one token refresh and one retry, never more.
- a 429 or 503 with Retry-After is retried when the wait fits the caller's deadline and sending the
  request again is safe: an idempotent method, or an idempotency key (sent as Idempotency-Key).
"""

from __future__ import annotations

import base64
import math
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import requests

from oauth_connections_client.errors import (
    ApiUnavailableError,
    CallTimeoutError,
    InvalidCallError,
    RateLimitedError,
    ResponseTooLargeError,
    TokenServiceError,
    UnsafeUrlError,
    UrlNotAllowedError,
)
from oauth_connections_client.netguard import CallDeadline, UrlPolicy, call_deadline, is_under, mount_guard
from oauth_connections_client.tokens import AccessToken

METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Credentials, the target, message framing and hop-by-hop headers are the engine's, never the caller's.
FORBIDDEN_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "host",
        "cookie",
        "cookie2",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "idempotency-key",
    }
)
WAIT_STATUSES = frozenset({429, 503})
MAX_REDIRECTS = 5
MAX_WAITS = 2  # retries after a Retry-After wait, per call
MIN_ATTEMPT_SECONDS = 0.5  # a wait that leaves less than this before the deadline is not worth it
DEFAULT_RETRY_AFTER_SECONDS = 30  # a 429 that does not say how long
MAX_RETRY_AFTER_SECONDS = 3600
MAX_HEADER_VALUE_LENGTH = 8192
CHUNK_BYTES = 64 * 1024

# Answer headers a caller may see: what describes the body, caching, paging and rate limits; never
# Set-Cookie or anything else a provider may use to carry a credential.
SAFE_RESPONSE_HEADERS = frozenset(
    {
        "cache-control",
        "content-disposition",
        "content-language",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expires",
        "last-modified",
        "link",
        "location",
        "request-id",
        "retry-after",
        "www-authenticate",
        "x-request-id",
    }
)
SAFE_HEADER_PREFIXES = ("ratelimit", "x-ratelimit-", "x-rate-limit-")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
_TEXT_TYPE = re.compile(r"^(text/|[^;]*(json|xml|javascript|x-www-form-urlencoded))", re.IGNORECASE)
# "." and ".." segments (also percent-encoded) let a URL under a base point above it once a server resolves them.
_DOT_SEGMENT = re.compile(r"(^|/)(\.|%2e){1,2}(/|$)", re.IGNORECASE)
_CHARSET = re.compile(r"charset=\"?([\w.:-]+)", re.IGNORECASE)


class TokenSource(Protocol):
    """Where the engine gets the connection's token: GetTokenFunction for the client, in-process for the service."""

    def __call__(self, *, force_refresh: bool) -> AccessToken: ...


@dataclass(frozen=True)
class Sent:
    response: requests.Response  # streamed: the body is still unread
    attempts: int
    refreshed: bool


@dataclass(frozen=True)
class Expectation:
    """What the answer must look like to count as `matched` (the action hooks' "response must match")."""

    status: tuple[int, ...] = ()
    body_pattern: str | None = None


@dataclass(frozen=True)
class ApiCall:
    method: str
    url: str
    query: Mapping[str, str | list[str]] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = field(default=None, repr=False)
    timeout_seconds: float = 10.0
    max_response_bytes: int = 1_000_000
    truncate: bool = False  # a longer body is cut at max_response_bytes instead of failing the call
    expect: Expectation | None = None
    idempotency_key: str | None = None


def prepare_session(session: requests.Session, policy: UrlPolicy) -> requests.Session:
    """Route a session through the SSRF guard, keep no cookies, and send no hop-by-hop header of its own."""
    mount_guard(session, policy)
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    session.headers.pop("Connection", None)
    return session


def new_session(policy: UrlPolicy) -> requests.Session:
    session = prepare_session(requests.Session(), policy)
    session.max_redirects = MAX_REDIRECTS
    return session


def check_headers(headers: Mapping[str, Any]) -> None:
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise InvalidCallError(f"invalid header name {str(name)[:64]!r}")
        if name.lower() in FORBIDDEN_HEADERS:
            raise InvalidCallError(f"the {name} header cannot be set by the caller")
        if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE_LENGTH or any(c in value for c in "\r\n\0"):
            raise InvalidCallError(f"invalid value for the {name} header")


def check_allowed(url: str, allowed_urls: tuple[str, ...]) -> None:
    if _DOT_SEGMENT.search(urlsplit(url).path):
        raise UrlNotAllowedError(f"{shown_url(url)} has dot segments: say the path the API resolves to")
    if not any(is_under(url, base) for base in allowed_urls):
        raise UrlNotAllowedError(f"{shown_url(url)} is not under the connection's allowed_urls")


def shown_url(url: str) -> str:
    """A URL as logs and messages may show it: without its query, which may carry data."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def retry_after_seconds(headers: Mapping[str, str]) -> int | None:
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return min(int(value), MAX_RETRY_AFTER_SECONDS) if len(value) <= 9 else MAX_RETRY_AFTER_SECONDS
    try:
        seconds = parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None
    return max(0, min(math.ceil(seconds), MAX_RETRY_AFTER_SECONDS))


def send(
    session: requests.Session,
    request: requests.PreparedRequest,
    tokens: TokenSource,
    *,
    expires: float | None = None,
    timeout: Any = None,
    idempotency_key: str | None = None,
    allow_redirects: bool = True,
    watch: Callable[[socket.socket], None] | None = None,
    **options: Any,
) -> Sent:
    """Send a prepared request (its caller headers already passed check_headers) with the connection's token.

    `expires` (time.monotonic) is the caller's deadline: each attempt's timeouts stop there, and a
    Retry-After wait happens only when it ends before. Without it a 429 or 503 is returned at once.
    """
    method = (request.method or "").upper()
    if method not in METHODS:
        raise InvalidCallError(f"method {method[:16]!r} is not supported")
    if idempotency_key is not None:
        request.headers["Idempotency-Key"] = idempotency_key
    repeatable = method in IDEMPOTENT_METHODS or idempotency_key is not None
    token = tokens(force_refresh=False)
    attempts, refreshed, waits = 0, False, 0
    while True:
        attempts += 1
        response = _send_following(session, request.copy(), token, expires, timeout, allow_redirects, watch, options)
        if response.status_code == 401 and not refreshed:
            response.close()
            token, refreshed = tokens(force_refresh=True), True
            continue
        wait = retry_after_seconds(response.headers) if response.status_code in WAIT_STATUSES else None
        if (
            wait is not None
            and repeatable
            and waits < MAX_WAITS
            and expires is not None
            and time.monotonic() + wait + MIN_ATTEMPT_SECONDS < expires
        ):
            response.close()
            waits += 1
            time.sleep(wait)
            continue
        return Sent(response, attempts, refreshed)


def _send_following(
    session: requests.Session,
    request: requests.PreparedRequest,
    token: AccessToken,
    expires: float | None,
    timeout: Any,
    allow_redirects: bool,
    watch: Callable[[socket.socket], None] | None,
    options: dict[str, Any],
) -> requests.Response:
    for _hop in range(session.max_redirects + 1):
        url = request.url or ""
        check_allowed(url, token.allowed_urls)
        request.headers["Authorization"] = f"Bearer {token.access_token}"
        response = session.send(
            request, allow_redirects=False, stream=True, timeout=_attempt_timeout(timeout, expires), **options
        )
        if watch is not None:
            _watch_connection(response, watch)
        location = session.get_redirect_target(response) if allow_redirects else None
        if not location:
            return response
        response.close()
        request = _next_hop(request, response.status_code, urljoin(url, location))
    raise requests.TooManyRedirects(f"more than {session.max_redirects} redirects")


def _next_hop(request: requests.PreparedRequest, status: int, url: str) -> requests.PreparedRequest:
    """The request for a redirect's target; a 303 (and a 301/302 after a POST) becomes a GET without a body."""
    hop = request.copy()
    hop.prepare_url(url, None)
    if (status == 303 and hop.method != "HEAD") or (status in (301, 302) and hop.method == "POST"):
        hop.method = "GET"
        hop.body = None
        for name in ("Content-Type", "Content-Length", "Transfer-Encoding"):
            hop.headers.pop(name, None)
    return hop


def _attempt_timeout(timeout: Any, expires: float | None) -> Any:
    if expires is None:
        return timeout
    left = expires - time.monotonic()
    if left <= 0:
        raise CallTimeoutError("the call's deadline passed")
    if isinstance(timeout, tuple):
        return tuple(left if t is None else min(float(t), left) for t in timeout)
    return left if timeout is None else min(float(timeout), left)


def _watch_connection(response: requests.Response, watch: Callable[[socket.socket], None]) -> None:
    """A pooled connection was opened by an earlier call: put its socket under this call's deadline too."""
    sock = getattr(getattr(response.raw, "_connection", None), "sock", None)
    if isinstance(sock, socket.socket):
        watch(sock)


# ------------------------------------------------------------------ the answer CallApiFunction gives


def call(session: requests.Session, api_call: ApiCall, tokens: TokenSource) -> dict[str, Any]:
    """Make one authorized call and describe its answer; raises a TokenServiceError (or UnsafeUrlError)."""
    started = time.monotonic()
    check_headers(api_call.headers)
    pattern = _compile(api_call.expect)
    try:
        request = session.prepare_request(
            requests.Request(
                api_call.method.upper(),
                api_call.url,
                headers=dict(api_call.headers),
                params=dict(api_call.query or {}),
                data=api_call.body,
            )
        )
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, ValueError) as error:
        raise InvalidCallError(f"invalid URL: {error}") from error
    with call_deadline(api_call.timeout_seconds) as deadline:
        try:
            sent = send(
                session,
                request,
                tokens,
                expires=deadline.expires,
                idempotency_key=api_call.idempotency_key,
                watch=deadline.watch,
            )
            with sent.response as response:
                status = response.status_code
                if status == 429:
                    wait = retry_after_seconds(response.headers)
                    raise RateLimitedError(
                        "the API answered 429 Too Many Requests",
                        retry_after=max(1, wait if wait is not None else DEFAULT_RETRY_AFTER_SECONDS),
                    )
                body, truncated = _read_bounded(response, api_call.max_response_bytes, deadline)
        except requests.TooManyRedirects as error:
            raise ApiUnavailableError(f"the API redirected more than {session.max_redirects} times") from error
        except requests.RequestException as error:
            if deadline.expired or isinstance(error, requests.Timeout):
                raise CallTimeoutError(f"no complete answer within {api_call.timeout_seconds:g} seconds") from error
            raise ApiUnavailableError(f"the API could not be reached: {type(error).__name__}") from error
        if deadline.expired:
            raise CallTimeoutError(f"no complete answer within {api_call.timeout_seconds:g} seconds")
    if truncated and not api_call.truncate:
        raise ResponseTooLargeError(f"the answer's body is larger than {api_call.max_response_bytes} bytes")
    answer: dict[str, Any] = {
        "status": status,
        "headers": safe_headers(response.headers),
        **_body_fields(body, response.headers.get("Content-Type") or ""),
        "truncated": truncated,
        "attempts": sent.attempts,
        "refreshed": sent.refreshed,
        "elapsed_ms": round((time.monotonic() - started) * 1000),
    }
    if api_call.expect is not None:
        answer["matched"] = _matches(api_call.expect, pattern, status, body)
    return answer


def error_body(error: TokenServiceError | UnsafeUrlError) -> dict[str, Any]:
    """The `{"error": ...}` answer for a call that ended without one; an SSRF refusal is a URL not allowed."""
    if isinstance(error, UnsafeUrlError):
        return {"error": {"code": UrlNotAllowedError.code, "message": error.message}}
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.retry_after is not None:
        body["retry_after_seconds"] = error.retry_after
    return {"error": body}


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name.lower(): value
        for name, value in headers.items()
        if name.lower() in SAFE_RESPONSE_HEADERS or name.lower().startswith(SAFE_HEADER_PREFIXES)
    }


def _read_bounded(response: requests.Response, limit: int, deadline: CallDeadline) -> tuple[bytes, bool]:
    """Read the decoded body up to `limit` bytes; stop (and drop the connection) as soon as it goes past."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(CHUNK_BYTES):
        if deadline.expired:
            raise CallTimeoutError("the call's deadline passed while the answer was read")
        if size + len(chunk) > limit:
            chunks.append(chunk[: limit - size])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


def _body_fields(body: bytes, content_type: str) -> dict[str, str]:
    """Text as `body`, anything else (or text that does not decode) as `body_base64`."""
    if _TEXT_TYPE.match(content_type.strip()):
        found = _CHARSET.search(content_type)
        try:
            return {"body": body.decode(found.group(1) if found else "utf-8")}
        except (LookupError, UnicodeDecodeError):
            pass
    elif not body:
        return {"body": ""}
    return {"body_base64": base64.b64encode(body).decode()}


def _compile(expect: Expectation | None) -> re.Pattern[str] | None:
    if expect is None or expect.body_pattern is None:
        return None
    try:
        return re.compile(expect.body_pattern)
    except re.error as error:
        raise InvalidCallError(f"expect.body_pattern is not a valid regular expression: {error}") from error


def _matches(expect: Expectation, pattern: re.Pattern[str] | None, status: int, body: bytes) -> bool:
    if expect.status and status not in expect.status:
        return False
    return pattern is None or pattern.search(body.decode("utf-8", errors="replace")) is not None
