"""The call engine against a scripted local API: where the token goes, retries, limits and the answer's shape."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest
from scripted_api import ScriptedApi, Step, scripted_api

import oauth_connections_client as client
from oauth_connections_client import calls

LOOPBACK = client.UrlPolicy(allow_insecure_loopback=True)


class Tokens:
    """A token source that issues a new token on every forced refresh and records how it was asked."""

    def __init__(self, allowed_urls: tuple[str, ...]) -> None:
        self.allowed_urls = allowed_urls
        self.issued = 0
        self.forced: list[bool] = []

    def __call__(self, *, force_refresh: bool) -> client.AccessToken:
        self.forced.append(force_refresh)
        if force_refresh or self.issued == 0:
            self.issued += 1
        return client.AccessToken(f"token-{self.issued}", "Bearer", None, (), self.allowed_urls)


@pytest.fixture
def api() -> Iterator[ScriptedApi]:
    with scripted_api() as api:
        yield api


@pytest.fixture
def other() -> Iterator[ScriptedApi]:
    """Another host: never under the connection's allowed_urls."""
    with scripted_api() as api:
        yield api


@pytest.fixture
def tokens(api: ScriptedApi) -> Tokens:
    return Tokens((f"{api.base}/api/",))


def run(tokens: Tokens, url: str, method: str = "GET", **fields: object) -> dict[str, object]:
    return calls.call(calls.new_session(LOOPBACK), calls.ApiCall(method, url, **fields), tokens)  # type: ignore[arg-type]


def test_a_call_sends_the_token_and_describes_the_answer(api: ScriptedApi, tokens: Tokens) -> None:
    url = api.script(
        "/api/contacts",
        Step(
            200,
            {
                "Content-Type": "application/json",
                "X-RateLimit-Remaining": "9",
                "Set-Cookie": "session=secret",
                "X-Internal": "x",
            },
            b'{"contacts": 3}',
        ),
    )
    answer = run(tokens, url, query={"page": "2"}, headers={"Accept": "application/json"})
    headers = dict(answer["headers"])  # type: ignore[call-overload]
    assert headers.pop("date")  # the server's own, also safe
    assert headers == {"content-type": "application/json", "x-ratelimit-remaining": "9"}
    assert answer == {
        "status": 200,
        "headers": answer["headers"],
        "body": '{"contacts": 3}',
        "truncated": False,
        "attempts": 1,
        "refreshed": False,
        "elapsed_ms": answer["elapsed_ms"],
    }
    [seen] = api.seen
    assert (seen.path, seen.headers["authorization"], seen.headers["accept"]) == (
        "/api/contacts?page=2",
        "Bearer token-1",
        "application/json",
    )


def test_no_cookie_is_kept_between_calls(api: ScriptedApi, tokens: Tokens) -> None:
    url = api.script("/api/login", Step(200, {"Set-Cookie": "session=secret; Path=/"}))
    session = calls.new_session(LOOPBACK)
    for _ in range(2):
        calls.call(session, calls.ApiCall("GET", url), tokens)
    assert [seen.headers.get("cookie") for seen in api.seen] == [None, None]


def test_401_then_200_refreshes_once_and_retries_once(api: ScriptedApi, tokens: Tokens) -> None:
    url = api.script("/api/me", Step(401), Step(200, {"Content-Type": "text/plain"}, b"me"))
    answer = run(tokens, url)
    assert (answer["status"], answer["body"], answer["attempts"], answer["refreshed"]) == (200, "me", 2, True)
    assert tokens.forced == [False, True]
    assert api.authorizations == ["Bearer token-1", "Bearer token-2"]


def test_401_twice_is_reported_without_a_loop(api: ScriptedApi, tokens: Tokens) -> None:
    url = api.script("/api/me", Step(401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}))
    answer = run(tokens, url)
    assert (answer["status"], answer["attempts"], answer["refreshed"]) == (401, 2, True)
    assert answer["headers"]["www-authenticate"] == 'Bearer error="invalid_token"'  # type: ignore[index]
    assert tokens.forced == [False, True]
    assert len(api.seen) == 2


def test_429_with_retry_after_waits_and_retries_an_idempotent_call(api: ScriptedApi, tokens: Tokens) -> None:
    url = api.script("/api/contacts", Step(429, {"Retry-After": "1"}), Step(200, body=b"ok"))
    started = time.monotonic()
    answer = run(tokens, url, timeout_seconds=5)
    assert (answer["status"], answer["attempts"], answer["refreshed"]) == (200, 2, False)
    assert time.monotonic() - started >= 1
    assert len(api.seen) == 2


def test_429_on_a_post_is_retried_only_with_an_idempotency_key(api: ScriptedApi, tokens: Tokens) -> None:
    url = api.script("/api/events", Step(429, {"Retry-After": "1"}), Step(202))
    with pytest.raises(client.RateLimitedError) as raised:
        run(tokens, url, "POST", body=b"{}", timeout_seconds=5)
    assert raised.value.retry_after == 1
    assert len(api.seen) == 1

    api.script("/api/events", Step(429, {"Retry-After": "1"}), Step(202))
    answer = run(tokens, url, "POST", body=b'{"n": 1}', idempotency_key="evt-7", timeout_seconds=5)
    assert (answer["status"], answer["attempts"]) == (202, 2)
    assert [(s.headers.get("idempotency-key"), s.body) for s in api.seen[1:]] == [("evt-7", b'{"n": 1}')] * 2


def test_a_wait_past_the_deadline_fails_fast_as_rate_limited(api: ScriptedApi, tokens: Tokens) -> None:
    url = api.script("/api/contacts", Step(429, {"Retry-After": "120"}))
    started = time.monotonic()
    with pytest.raises(client.RateLimitedError) as raised:
        run(tokens, url, timeout_seconds=5)
    assert raised.value.retry_after == 120
    assert time.monotonic() - started < 1
    assert calls.error_body(raised.value) == {
        "error": {
            "code": "rate_limited",
            "message": "the API answered 429 Too Many Requests",
            "retry_after_seconds": 120,
        }
    }


def test_503_with_retry_after_is_retried_and_without_it_answered(api: ScriptedApi, tokens: Tokens) -> None:
    url = api.script("/api/contacts", Step(503, {"Retry-After": "1"}), Step(200, body=b"ok"))
    assert run(tokens, url, timeout_seconds=5)["attempts"] == 2
    api.script("/api/contacts", Step(503))
    answer = run(tokens, url, timeout_seconds=5)
    assert (answer["status"], answer["attempts"]) == (503, 1)


def test_a_redirect_inside_allowed_urls_is_followed_with_the_token(api: ScriptedApi, tokens: Tokens) -> None:
    url = api.script("/api/old", Step(303, {"Location": "/api/new"}))
    api.script("/api/new", Step(200, body=b"moved"))
    answer = run(tokens, url, "POST", body=b"data")
    assert (answer["status"], answer["body_base64"]) == (200, base64.b64encode(b"moved").decode())
    assert [(s.method, s.path, s.headers["authorization"], s.body) for s in api.seen] == [
        ("POST", "/api/old", "Bearer token-1", b"data"),
        ("GET", "/api/new", "Bearer token-1", b""),
    ]


def test_a_redirect_to_another_host_is_not_followed(api: ScriptedApi, other: ScriptedApi, tokens: Tokens) -> None:
    url = api.script("/api/contacts", Step(302, {"Location": f"{other.base}/api/contacts"}))
    other.script("/api/contacts", Step(200))
    with pytest.raises(client.UrlNotAllowedError) as raised:
        run(tokens, url)
    assert calls.error_body(raised.value)["error"]["code"] == "url_not_allowed"
    assert len(api.seen) == 1
    assert other.seen == []


def test_a_redirect_to_a_private_address_is_refused_before_connecting(api: ScriptedApi) -> None:
    private = "https://10.255.255.1/api/"
    tokens = Tokens((f"{api.base}/api/", private))
    url = api.script("/api/contacts", Step(302, {"Location": f"{private}contacts"}))
    with pytest.raises(client.UnsafeUrlError) as raised:
        run(tokens, url, timeout_seconds=5)
    assert raised.value.code == "unsafe_url"
    assert calls.error_body(raised.value)["error"]["code"] == "url_not_allowed"
    assert len(api.seen) == 1


@pytest.mark.parametrize("path", ["/elsewhere", "/apix/contacts", "/api/../admin", "/api/%2E%2e/admin"])
def test_a_url_outside_allowed_urls_is_never_called(api: ScriptedApi, tokens: Tokens, path: str) -> None:
    with pytest.raises(client.UrlNotAllowedError):
        run(tokens, f"{api.base}{path}")
    assert api.seen == []


def test_a_body_over_the_limit_stops_the_read_early(api: ScriptedApi, tokens: Tokens) -> None:
    url = api.script("/api/export", Step(200, {"Content-Type": "text/plain"}, endless=True))
    with pytest.raises(client.ResponseTooLargeError):
        run(tokens, url, max_response_bytes=100_000, timeout_seconds=20)
    answer = run(tokens, url, max_response_bytes=100_000, truncate=True, timeout_seconds=20)
    assert (answer["truncated"], len(str(answer["body"]))) == (True, 100_000)
    api.release.set()


def test_a_server_that_stalls_meets_the_deadline(api: ScriptedApi, tokens: Tokens) -> None:
    url = api.script("/api/slow", Step(stall=30))
    started = time.monotonic()
    with pytest.raises(client.CallTimeoutError):
        run(tokens, url, timeout_seconds=0.5)
    assert time.monotonic() - started < 2


def test_a_server_that_drips_meets_the_overall_deadline(api: ScriptedApi, tokens: Tokens) -> None:
    url = api.script("/api/drip", Step(200, drip=0.05))
    started = time.monotonic()
    with pytest.raises(client.CallTimeoutError):
        run(tokens, url, timeout_seconds=1, max_response_bytes=10_000_000)
    assert time.monotonic() - started < 2.5


def test_a_binary_body_both_ways(api: ScriptedApi, tokens: Tokens) -> None:
    image = bytes(range(256)) * 4
    url = api.script("/api/avatar", Step(200, {"Content-Type": "image/png"}, image))
    answer = run(tokens, url, "PUT", body=image[::-1], headers={"Content-Type": "application/octet-stream"})
    assert base64.b64decode(str(answer["body_base64"])) == image
    assert "body" not in answer
    assert api.seen[0].body == image[::-1]


@pytest.mark.parametrize(
    ("expect", "matched"),
    [
        (calls.Expectation(body_pattern=r'"status":\s*"accepted"'), True),
        (calls.Expectation(body_pattern=r"rejected"), False),
        (calls.Expectation(status=(200, 202)), True),
        (calls.Expectation(status=(201,)), False),
        (calls.Expectation(status=(202,), body_pattern="accepted"), True),
    ],
)
def test_expect_says_whether_the_answer_matched(
    api: ScriptedApi, tokens: Tokens, expect: calls.Expectation, matched: bool
) -> None:
    url = api.script("/api/hook", Step(202, {"Content-Type": "application/json"}, b'{"status": "accepted"}'))
    assert run(tokens, url, "POST", body=b"[]", expect=expect)["matched"] is matched


def test_a_body_pattern_that_does_not_compile_is_invalid(api: ScriptedApi, tokens: Tokens) -> None:
    with pytest.raises(client.InvalidCallError):
        run(tokens, api.script("/api/hook", Step()), expect=calls.Expectation(body_pattern="(unclosed"))
    assert api.seen == []


@pytest.mark.parametrize(
    "header",
    [
        "Authorization",
        "Host",
        "Cookie",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Keep-Alive",
        "Upgrade",
        "TE",
        "proxy-authorization",
    ],
)
def test_forbidden_caller_headers_are_refused(api: ScriptedApi, tokens: Tokens, header: str) -> None:
    url = api.script("/api/contacts", Step())
    with pytest.raises(client.InvalidCallError, match=header):
        run(tokens, url, headers={header: "x"})
    with pytest.raises(client.InvalidCallError, match=header), session(api, tokens) as authorized:
        authorized.get(url, headers={header: "x"}, timeout=5)
    assert api.seen == []
    assert tokens.forced == []


@pytest.mark.parametrize("headers", [{"X-A": "a\r\nInjected: 1"}, {"Bad Name": "x"}])
def test_malformed_caller_headers_are_refused(api: ScriptedApi, tokens: Tokens, headers: dict[str, str]) -> None:
    with pytest.raises(client.InvalidCallError):
        run(tokens, api.script("/api/contacts", Step()), headers=headers)
    assert api.seen == []


def test_an_unknown_method_is_refused(api: ScriptedApi, tokens: Tokens) -> None:
    with pytest.raises(client.InvalidCallError):
        run(tokens, api.script("/api/contacts", Step()), "TRACE")
    assert api.seen == []


def session(api: ScriptedApi, tokens: Tokens, **options: object) -> client.AuthorizedSession:
    def token_source(tenant_id: str, connection_id: str, *, force_refresh: bool, **_: object) -> client.AccessToken:
        return tokens(force_refresh=force_refresh)

    return client.AuthorizedSession("acme", "con_1", policy=LOOPBACK, token_source=token_source, **options)  # type: ignore[arg-type]


def test_the_session_waits_on_retry_after_only_within_its_deadline(api: ScriptedApi, tokens: Tokens) -> None:
    url = api.script("/api/contacts", Step(429, {"Retry-After": "1"}), Step(200))
    with session(api, tokens) as no_deadline:
        assert no_deadline.get(url, timeout=5).status_code == 429
    api.script("/api/contacts", Step(429, {"Retry-After": "1"}), Step(200))
    with session(api, tokens, deadline_seconds=5) as patient:
        assert patient.get(url, timeout=5).status_code == 200
    assert [s.path for s in api.seen] == ["/api/contacts"] * 3


def test_the_session_refuses_a_redirect_to_another_host(api: ScriptedApi, other: ScriptedApi, tokens: Tokens) -> None:
    url = api.script("/api/contacts", Step(307, {"Location": f"{other.base}/api/contacts"}))
    with pytest.raises(client.UrlNotAllowedError), session(api, tokens) as authorized:
        authorized.post(url, json={"a": 1}, timeout=5)
    assert other.seen == []


def test_an_entry_not_filled_in_allows_nothing(api: ScriptedApi) -> None:
    """GetTokenFunction fills `{instance_url}/...` in from the connection's kept URL; one that reaches the
    engine unfilled (no value kept yet) is no URL, so nothing is under it."""
    with pytest.raises(client.UrlNotAllowedError):
        run(Tokens(("{instance_url}/services/",)), f"{api.base}/services/data")
    assert api.seen == []
