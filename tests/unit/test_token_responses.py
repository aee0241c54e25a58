"""Token responses as real providers send them, through the code exchange (authlib + normalisation)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from oauth_connections.oauth import token_endpoint
from oauth_connections.security.netguard import UrlPolicy
from tests.support.token_endpoint import RESET, Scripted, ScriptedTokenEndpoint

LOOPBACK = UrlPolicy(allow_insecure_loopback=True)


@pytest.fixture
def endpoint(running_endpoint: ScriptedTokenEndpoint) -> ScriptedTokenEndpoint:
    running_endpoint.reset()
    return running_endpoint


def exchange(
    endpoint: ScriptedTokenEndpoint, method: str = "client_secret_basic", timeout: float = 5.0
) -> token_endpoint.TokenSet:
    client = token_endpoint.ClientSettings(
        client_id="cid",
        client_secret=None if method == "none" else "csecret",
        token_url=endpoint.url,
        auth_method=method,
        scopes=("requested.a", "requested.b"),
    )
    return token_endpoint.exchange_code(
        client,
        code="the-code",
        redirect_uri="https://api.example.com/oauth2/callback",
        code_verifier="v" * 50,
        policy=LOOPBACK,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("answer", "expires_in", "scopes", "token_type"),
    [
        (
            Scripted(body={"access_token": "a", "token_type": "Bearer", "expires_in": 3600, "scope": "x y"}),
            3600,
            ("x", "y"),
            "Bearer",
        ),
        (
            Scripted(body={"access_token": "a", "token_type": "bearer", "expires_in": "1800"}),
            1800,
            ("requested.a", "requested.b"),
            "Bearer",
        ),
        (Scripted(body={"access_token": "a", "token_type": "BEARER"}), None, ("requested.a", "requested.b"), "Bearer"),
        (Scripted(body={"access_token": "a", "token_type": "bearer", "scope": "x,y"}), None, ("x", "y"), "Bearer"),
        (Scripted(body={"access_token": "a", "token_type": "bearer", "scope": ""}), None, (), "Bearer"),
        (Scripted(body={"access_token": "a", "expires_in": 60.0}), 60, ("requested.a", "requested.b"), "Bearer"),
        (
            Scripted(body={"access_token": "a", "token_type": "mac", "expires_in": "not a number"}),
            None,
            ("requested.a", "requested.b"),
            "mac",
        ),
        (
            Scripted(
                body="access_token=a&token_type=bearer&expires_in=7200&scope=x%2Cy",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
            7200,
            ("x", "y"),
            "Bearer",
        ),
        (
            Scripted(body="access_token=a&scope=repo&token_type=bearer", headers={"Content-Type": "text/plain"}),
            None,
            ("repo",),
            "Bearer",
        ),
    ],
)
def test_quirky_success_responses(
    endpoint: ScriptedTokenEndpoint, answer: Scripted, expires_in: int | None, scopes: tuple[str, ...], token_type: str
) -> None:
    endpoint.queue(answer)
    before = int(time.time())
    token_set = exchange(endpoint)
    assert token_set.access_token == "a"
    assert token_set.token_type == token_type
    assert token_set.scopes == scopes
    if expires_in is None:
        assert token_set.expires_at is None
    else:
        assert token_set.expires_at is not None
        assert before + expires_in <= token_set.expires_at <= int(time.time()) + expires_in


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Scripted(200, {"error": "invalid_grant", "error_description": "code expired"}), "invalid_grant"),
        (Scripted(400, {"error": "invalid_grant"}), "invalid_grant"),
        (Scripted(401, {"error": "invalid_client"}), "invalid_client"),
        (Scripted(400, {"error": "unauthorized_client"}), "unauthorized_client"),
        (
            Scripted(
                400, "error=invalid_grant&error_description=bad", {"Content-Type": "application/x-www-form-urlencoded"}
            ),
            "invalid_grant",
        ),
    ],
)
def test_oauth_errors_are_rejections(endpoint: ScriptedTokenEndpoint, answer: Scripted, error: str) -> None:
    endpoint.queue(answer)
    with pytest.raises(token_endpoint.ProviderRejectedError) as raised:
        exchange(endpoint)
    assert raised.value.error == error
    assert raised.value.permanent


@pytest.mark.parametrize(
    ("answer", "retry_after"),
    [
        (Scripted(500, {"error": "server_error"}), token_endpoint.DEFAULT_RETRY_AFTER_SECONDS),
        (
            Scripted(502, "<html>Bad gateway</html>", {"Content-Type": "text/html"}),
            token_endpoint.DEFAULT_RETRY_AFTER_SECONDS,
        ),
        (Scripted(503, "", {"Retry-After": "120"}), 120),
        (Scripted(429, {"error": "slow_down"}, {"Retry-After": "7"}), 7),
        (Scripted(503, "", {"Retry-After": "\u00b2"}), token_endpoint.DEFAULT_RETRY_AFTER_SECONDS),
        (Scripted(503, "", {"Retry-After": "9" * 5000}), token_endpoint.MAX_RETRY_AFTER_SECONDS),
        (
            Scripted(200, "<html>maintenance</html>", {"Content-Type": "text/html"}),
            token_endpoint.DEFAULT_RETRY_AFTER_SECONDS,
        ),
        (Scripted(200, {"token_type": "bearer"}), token_endpoint.DEFAULT_RETRY_AFTER_SECONDS),
        (Scripted(404, "not found"), token_endpoint.DEFAULT_RETRY_AFTER_SECONDS),
        (RESET, token_endpoint.DEFAULT_RETRY_AFTER_SECONDS),
    ],
)
def test_transient_failures_are_unavailability(endpoint: ScriptedTokenEndpoint, answer: Any, retry_after: int) -> None:
    endpoint.queue(answer)
    with pytest.raises(token_endpoint.ProviderUnavailableError) as raised:
        exchange(endpoint)
    assert raised.value.retry_after == retry_after


def test_timeout_is_unavailability(endpoint: ScriptedTokenEndpoint) -> None:
    endpoint.queue(Scripted(body={"access_token": "late"}, delay=2.0))
    with pytest.raises(token_endpoint.ProviderUnavailableError):
        exchange(endpoint, timeout=0.5)


@pytest.mark.parametrize(
    ("method", "basic", "secret_in_body"),
    [("client_secret_basic", True, False), ("client_secret_post", False, True), ("none", False, False)],
)
def test_client_authentication_methods(
    endpoint: ScriptedTokenEndpoint, method: str, basic: bool, secret_in_body: bool
) -> None:
    endpoint.queue(Scripted(body={"access_token": "a"}))
    exchange(endpoint, method)
    request = endpoint.requests[-1]
    assert request.form["grant_type"] == "authorization_code"
    assert request.form["code"] == "the-code"
    assert request.form["code_verifier"] == "v" * 50
    assert request.form["redirect_uri"] == "https://api.example.com/oauth2/callback"
    assert ("Authorization" in request.headers) is basic
    assert ("client_secret" in request.form) is secret_in_body
    if method == "none":
        assert request.form["client_id"] == "cid"
