"""The test authorization server (provider/server.mjs) and the harness around it behave as promised."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from devstack.config import node_executable
from tests.support.provider import (
    BASIC_CLIENT_ID,
    BASIC_CLIENT_SECRET,
    POST_CLIENT_ID,
    POST_CLIENT_SECRET,
    PUBLIC_CLIENT_ID,
    SERVICE_CLIENT_ID,
    SERVICE_CLIENT_SECRET,
    AuthMethod,
    OidcProvider,
    ProviderError,
    make_pkce,
    standard_clients,
)
from tests.support.user_agent import AuthorizationResult, walk_authorization

CODE_CLIENTS: list[tuple[str, str | None, AuthMethod]] = [
    (BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, "client_secret_basic"),
    (POST_CLIENT_ID, POST_CLIENT_SECRET, "client_secret_post"),
    (PUBLIC_CLIENT_ID, None, "none"),
]


class _CallbackHandler(BaseHTTPRequestHandler):
    """A page for the browser to land on after the redirect back to the client."""

    def do_GET(self) -> None:
        if self.path.startswith("/start?"):
            # A client's "connect" URL: redirects the browser to the authorization request.
            target = parse_qs(urlsplit(self.path).query)["to"][0]
            self.send_response(302)
            self.send_header("location", target)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        body = b"<!DOCTYPE html><html><head><title>client callback</title></head><body>landed</body></html>"
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def callback_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CallbackHandler)
    server.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def redirect_uri(callback_server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{callback_server.server_address[1]}/oauth2/callback"


@pytest.fixture(scope="module")
def provider(redirect_uri: str) -> Iterator[OidcProvider]:
    with OidcProvider(standard_clients(redirect_uri), access_token_ttl=300) as op:
        yield op


@pytest.fixture
def op(provider: OidcProvider) -> OidcProvider:
    provider.set_token_endpoint_delay(0)
    provider.reset_stats()
    return provider


def _authorize(op: OidcProvider, client_id: str, redirect_uri: str, **kw: Any) -> tuple[AuthorizationResult, str]:
    verifier, challenge = make_pkce()
    url = op.authorization_url(client_id, redirect_uri, scope="api.read api.write", code_challenge=challenge)
    result = walk_authorization(url, **kw)
    return result, verifier


def test_discovery_advertises_what_the_tests_rely_on(op: OidcProvider) -> None:
    meta = op.metadata
    assert meta["issuer"] == op.issuer
    assert op.issuer.startswith("http://127.0.0.1:")
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(meta["grant_types_supported"])
    assert {"client_secret_basic", "client_secret_post", "none"} <= set(meta["token_endpoint_auth_methods_supported"])
    assert meta["introspection_endpoint"].startswith(op.issuer)
    assert meta["revocation_endpoint"].startswith(op.issuer)
    assert {"api.read", "api.write", "offline_access", "openid"} <= set(meta["scopes_supported"])
    oauth_meta = requests.get(f"{op.issuer}/.well-known/oauth-authorization-server", timeout=5).json()
    assert oauth_meta["token_endpoint"] == meta["token_endpoint"]


@pytest.mark.parametrize(("client_id", "client_secret", "auth_method"), CODE_CLIENTS)
def test_code_flow_with_pkce_then_refresh_rotation_and_reuse_detection(
    op: OidcProvider, redirect_uri: str, client_id: str, client_secret: str | None, auth_method: AuthMethod
) -> None:
    result, verifier = _authorize(op, client_id, redirect_uri)

    assert result.url.startswith(redirect_uri + "?")
    assert result.response is None  # the callback itself was not requested
    assert result.error is None, result.params
    assert result.code
    assert result.iss == op.issuer  # RFC 9207
    assert result.state == parse_qs(urlsplit(result.visited[0]).query)["state"][0]

    exchanged = op.token(
        {
            "grant_type": "authorization_code",
            "code": result.code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        client_id,
        client_secret,
        auth_method=auth_method,
    )
    assert exchanged.status_code == 200, exchanged.text
    tokens = exchanged.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 300
    assert set(tokens["scope"].split()) == {"api.read", "api.write"}
    assert tokens["refresh_token"]  # issued without offline_access or prompt=consent

    info = op.introspect(tokens["access_token"], BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)
    assert info["active"] is True
    assert info["client_id"] == client_id
    assert info["sub"] == "alice"
    assert info["iss"] == op.issuer
    assert set(info["scope"].split()) == {"api.read", "api.write"}

    refreshed = op.token(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        client_id,
        client_secret,
        auth_method=auth_method,
    )
    assert refreshed.status_code == 200, refreshed.text
    new = refreshed.json()
    assert new["refresh_token"] != tokens["refresh_token"]  # rotated
    assert new["access_token"] != tokens["access_token"]
    assert op.introspect(new["access_token"], BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is True

    reused = op.token(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        client_id,
        client_secret,
        auth_method=auth_method,
    )
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    # Reuse of a rotated refresh token revokes the whole grant.
    assert op.introspect(new["access_token"], BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is False
    after = op.token(
        {"grant_type": "refresh_token", "refresh_token": new["refresh_token"]},
        client_id,
        client_secret,
        auth_method=auth_method,
    )
    assert after.json()["error"] == "invalid_grant"

    stats = op.stats()
    assert stats["token_requests"] == {
        "total": 4,
        "by_grant_type": {"authorization_code": 1, "refresh_token": 3},
        "by_outcome": {"success": 2, "invalid_grant": 2},
        "by_grant_type_and_outcome": {
            "authorization_code": {"success": 1},
            "refresh_token": {"success": 1, "invalid_grant": 2},
        },
        "by_client": {client_id: 4},
    }
    assert stats["introspection_requests"] == {"total": 3, "active": 2, "inactive": 1, "error": 0}
    assert stats["authorization_requests"] == 1
    assert stats["grants_revoked"] >= 1


def test_authorization_code_is_single_use_and_replay_revokes_its_tokens(op: OidcProvider, redirect_uri: str) -> None:
    result, verifier = _authorize(op, POST_CLIENT_ID, redirect_uri)
    exchange = {
        "grant_type": "authorization_code",
        "code": str(result.code),
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    first = op.token(exchange, POST_CLIENT_ID, POST_CLIENT_SECRET, auth_method="client_secret_post")
    assert first.status_code == 200, first.text
    tokens = first.json()
    replay = op.token(exchange, POST_CLIENT_ID, POST_CLIENT_SECRET, auth_method="client_secret_post")
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert op.introspect(tokens["access_token"], BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is False
    refresh = op.token(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        POST_CLIENT_ID,
        POST_CLIENT_SECRET,
        auth_method="client_secret_post",
    )
    assert refresh.json()["error"] == "invalid_grant"


def test_public_client_must_use_pkce(op: OidcProvider, redirect_uri: str) -> None:
    url = op.authorization_url(PUBLIC_CLIENT_ID, redirect_uri)
    result = walk_authorization(url)
    assert result.error == "invalid_request"
    assert "PKCE" in result.params["error_description"]
    assert result.iss == op.issuer


def test_confidential_client_may_skip_pkce_but_a_wrong_verifier_fails(op: OidcProvider, redirect_uri: str) -> None:
    plain = walk_authorization(op.authorization_url(BASIC_CLIENT_ID, redirect_uri))
    assert plain.code
    ok = op.token(
        {"grant_type": "authorization_code", "code": plain.code, "redirect_uri": redirect_uri},
        BASIC_CLIENT_ID,
        BASIC_CLIENT_SECRET,
    )
    assert ok.status_code == 200, ok.text

    result, _ = _authorize(op, BASIC_CLIENT_ID, redirect_uri)
    wrong_verifier, _ = make_pkce()
    bad = op.token(
        {
            "grant_type": "authorization_code",
            "code": str(result.code),
            "redirect_uri": redirect_uri,
            "code_verifier": wrong_verifier,
        },
        BASIC_CLIENT_ID,
        BASIC_CLIENT_SECRET,
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_grant"


def test_wrong_client_secret_is_invalid_client(op: OidcProvider) -> None:
    response = op.token({"grant_type": "client_credentials"}, SERVICE_CLIENT_ID, "not-the-secret")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    stats = op.stats()["token_requests"]
    assert stats["by_grant_type_and_outcome"] == {"client_credentials": {"invalid_client": 1}}


def test_client_credentials(op: OidcProvider) -> None:
    response = op.token(
        {"grant_type": "client_credentials", "scope": "api.read"}, SERVICE_CLIENT_ID, SERVICE_CLIENT_SECRET
    )
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == "api.read"
    assert "refresh_token" not in tokens
    info = op.introspect(tokens["access_token"], SERVICE_CLIENT_ID, SERVICE_CLIENT_SECRET)
    assert info["active"] is True
    assert info["client_id"] == SERVICE_CLIENT_ID
    assert "sub" not in info or info["sub"] == SERVICE_CLIENT_ID

    op.revoke(tokens["access_token"], SERVICE_CLIENT_ID, SERVICE_CLIENT_SECRET)
    assert op.introspect(tokens["access_token"], SERVICE_CLIENT_ID, SERVICE_CLIENT_SECRET)["active"] is False

    stats = op.stats()
    assert stats["token_requests"]["by_grant_type_and_outcome"] == {"client_credentials": {"success": 1}}
    assert stats["revocation_requests"] == {"total": 1, "success": 1, "error": 0}
    assert stats["introspection_requests"]["total"] == 2


def test_code_flow_client_cannot_use_client_credentials(op: OidcProvider) -> None:
    response = op.token({"grant_type": "client_credentials"}, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)
    assert response.status_code == 400
    # oidc-provider answers invalid_request here (RFC 6749 would suggest unauthorized_client).
    assert response.json()["error"] == "invalid_request"
    assert "grant type is not allowed" in response.json()["error_description"]


def test_denying_consent_answers_access_denied(op: OidcProvider, redirect_uri: str) -> None:
    result, _ = _authorize(op, BASIC_CLIENT_ID, redirect_uri, approve=False)
    assert result.url.startswith(redirect_uri + "?")
    assert result.error == "access_denied"
    assert result.code is None
    assert result.iss == op.issuer
    assert any(url.endswith("/abort") for url in result.visited)
    assert op.stats()["token_requests"]["total"] == 0


def test_a_request_without_any_known_scope_is_refused(op: OidcProvider, redirect_uri: str) -> None:
    _, challenge = make_pkce()
    url = op.authorization_url(BASIC_CLIENT_ID, redirect_uri, scope="not.a.scope", code_challenge=challenge)
    result = walk_authorization(url)
    assert result.error == "access_denied"
    assert result.code is None


def test_login_session_is_kept_in_the_session_cookies(op: OidcProvider, redirect_uri: str) -> None:
    first, _ = _authorize(op, BASIC_CLIENT_ID, redirect_uri)
    # Same browser again: signed in and consent remembered, so the server redirects at once.
    second, _ = _authorize(op, BASIC_CLIENT_ID, redirect_uri, session=first.session)
    assert second.code
    assert len(second.visited) == 1


def test_stop_at_and_follow_callback(op: OidcProvider, redirect_uri: str, callback_server: ThreadingHTTPServer) -> None:
    stopped, _ = _authorize(op, BASIC_CLIENT_ID, redirect_uri, stop_at=lambda url: "/interaction/" in url)
    assert stopped.stopped_by_predicate
    assert "/interaction/" in stopped.url

    hits_before = len(callback_server.hits)  # type: ignore[attr-defined]
    followed, _ = _authorize(op, BASIC_CLIENT_ID, redirect_uri, follow_callback=True)
    assert followed.response is not None
    assert followed.response.status_code == 200
    assert len(callback_server.hits) == hits_before + 1  # type: ignore[attr-defined]


def test_the_provider_runs_on_a_node_lts_it_supports(provider: OidcProvider) -> None:
    """`make setup` installs Node.js 22 LTS for it (.tools/node): no runtime warning at start."""
    node = node_executable()
    assert node is not None
    release = subprocess.run(
        [node, "-p", "process.release.lts + ' ' + process.versions.node"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert release[0] >= "Jod" and int(release[1].split(".")[0]) >= 22, release  # Jod: the 22.x LTS line
    assert "Unsupported runtime" not in provider.output


def test_consent_page_names_the_app_and_the_scopes_without_debug_details(op: OidcProvider, redirect_uri: str) -> None:
    """A person sees which app asks for what; nothing of the request's state or PKCE challenge."""
    verifier, challenge = make_pkce()
    state = "state-" + verifier[:12]
    url = op.authorization_url(
        BASIC_CLIENT_ID, redirect_uri, scope="api.read api.write", state=state, code_challenge=challenge
    )
    pages: list[requests.Response] = []

    def stop_at_consent(location: str) -> bool:
        if "/interaction/" not in location:
            return False
        pages.append(requests.get(location, cookies=session.cookies, timeout=10))
        return "Allow access?" in pages[-1].text

    session = requests.Session()
    stopped = walk_authorization(url, session=session, stop_at=stop_at_consent)
    assert stopped.stopped_by_predicate
    sign_in, consent = pages[0].text, pages[-1].text
    assert "<h1>Sign in</h1>" in sign_in and '<strong id="client-name">Basic test app</strong>' in sign_in
    assert '<strong id="client-name">Basic test app</strong> asks for access' in consent
    assert "<dt>api.read</dt><dd>Read your data</dd>" in consent
    assert "<dt>api.write</dt><dd>Create and change your data</dd>" in consent
    for text in (sign_in, consent):
        assert "DEBUG" not in text and "<script" not in text and "fonts.googleapis" not in text
        assert state not in text and challenge not in text
    assert "default-src 'none'" in pages[-1].headers["content-security-policy"]
    # The page was only looked at: the walk still completes with a code.
    finished = walk_authorization(stopped.url, session=session, provider_origin=op.issuer)
    assert finished.code and finished.state == state


def test_a_client_without_a_name_is_shown_by_its_id(op: OidcProvider, redirect_uri: str) -> None:
    _, challenge = make_pkce()
    url = op.authorization_url(PUBLIC_CLIENT_ID, redirect_uri, scope="api.read", code_challenge=challenge)
    found: list[str] = []

    def consent(location: str) -> bool:
        if "/interaction/" in location:
            found.append(requests.get(location, cookies=session.cookies, timeout=10).text)
        return bool(found) and "Allow access?" in found[-1]

    session = requests.Session()
    walk_authorization(url, session=session, stop_at=consent)
    assert f'<strong id="client-name">{PUBLIC_CLIENT_ID}</strong> asks for access' in found[-1]


def test_refresh_answers_are_held_back_by_the_configured_delay(op: OidcProvider, redirect_uri: str) -> None:
    result, verifier = _authorize(op, BASIC_CLIENT_ID, redirect_uri)
    tokens = op.token(
        {
            "grant_type": "authorization_code",
            "code": str(result.code),
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        BASIC_CLIENT_ID,
        BASIC_CLIENT_SECRET,
    ).json()
    op.set_token_endpoint_delay(400)
    started = time.monotonic()
    refreshed = op.token(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        BASIC_CLIENT_ID,
        BASIC_CLIENT_SECRET,
    )
    assert refreshed.status_code == 200
    assert time.monotonic() - started >= 0.4
    op.set_token_endpoint_delay(0)


def test_walk_starts_at_a_client_url_that_redirects(
    op: OidcProvider, redirect_uri: str, callback_server: ThreadingHTTPServer
) -> None:
    _, challenge = make_pkce()
    authorization = op.authorization_url(PUBLIC_CLIENT_ID, redirect_uri, code_challenge=challenge)
    start = f"http://127.0.0.1:{callback_server.server_address[1]}/start?{urlencode({'to': authorization})}"
    hits_before = len(callback_server.hits)  # type: ignore[attr-defined]
    result = walk_authorization(start)
    assert result.visited[:2] == [start, authorization]
    assert result.url.startswith(redirect_uri + "?")
    assert result.code
    assert len(callback_server.hits) == hits_before  # type: ignore[attr-defined]


def test_concurrent_use_of_one_refresh_token_counts_as_reuse(op: OidcProvider, redirect_uri: str) -> None:
    result, verifier = _authorize(op, BASIC_CLIENT_ID, redirect_uri)
    tokens = op.token(
        {
            "grant_type": "authorization_code",
            "code": str(result.code),
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        BASIC_CLIENT_ID,
        BASIC_CLIENT_SECRET,
    ).json()
    op.set_token_endpoint_delay(200)
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: op.token(refresh, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET), range(2)))
    assert sorted(a.status_code for a in answers) == [200, 400]
    winner = next(a.json() for a in answers if a.status_code == 200)
    # The loser's reuse revoked the grant, including what the winner was just given.
    assert op.introspect(winner["access_token"], BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is False
    assert op.stats()["token_requests"]["by_grant_type_and_outcome"]["refresh_token"] == {
        "success": 1,
        "invalid_grant": 1,
    }


def test_startup_failure_reports_the_process_output() -> None:
    broken = OidcProvider(
        [{"client_id": "x", "client_secret": "y", "redirect_uris": ["not a url"]}], startup_timeout=20
    )
    try:
        with pytest.raises(ProviderError, match="exited with code 1") as failure:
            broken.start()
    finally:
        broken.stop()
    assert "redirect_uris must only contain valid uris" in str(failure.value)
    assert not broken.running


@pytest.mark.browser
def test_browser_signs_in_consents_and_lands_on_the_callback(
    op: OidcProvider, redirect_uri: str, callback_server: ThreadingHTTPServer
) -> None:
    from tests.support.browser import launch_chromium, login_and_consent

    verifier, challenge = make_pkce()
    url = op.authorization_url(PUBLIC_CLIENT_ID, redirect_uri, code_challenge=challenge, state="browser-state")
    with launch_chromium() as browser:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)
        login_and_consent(page, "bob", "whatever")
        page.wait_for_url(f"{redirect_uri}?**", timeout=10_000)
        assert page.title() == "client callback"
        params = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
        context.close()

    assert params["state"] == "browser-state"
    assert params["iss"] == op.issuer
    response = op.token(
        {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        PUBLIC_CLIENT_ID,
        auth_method="none",
    )
    assert response.status_code == 200, response.text
    info = op.introspect(response.json()["access_token"], BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)
    assert info["sub"] == "bob"
    assert info["active"] is True
