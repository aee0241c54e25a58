"""AuthorizedSession on its own: the token goes only under allowed_urls, through the SSRF guard's copy."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from fake_token_service import FakeTokenService

import oauth_connections_client as client

LOOPBACK = client.UrlPolicy(allow_insecure_loopback=True)


@dataclass
class Api:
    """A loopback API that accepts only the newest token the fake service issued."""

    base: str
    service: FakeTokenService
    seen: list[tuple[str, str]] = field(default_factory=list)
    reject: list[int] = field(default_factory=lambda: [0])

    def session(self, policy: client.UrlPolicy = LOOPBACK) -> client.AuthorizedSession:
        return client.AuthorizedSession("acme", "con_1", policy=policy, lambda_client=self.service)


class _Handler(http.server.BaseHTTPRequestHandler):
    api: ClassVar[Api]

    def do_GET(self) -> None:
        authorization = self.headers.get("Authorization") or ""
        self.api.seen.append((self.path, authorization))
        if self.path == "/api/redirect":
            self._answer(302, {"Location": "/elsewhere/secret"})
        elif self.path == "/api/inside-redirect":
            self._answer(302, {"Location": "/api/contacts"})
        elif authorization != f"Bearer token-{self.api.service.issued}" or self.api.reject[0] > 0:
            self.api.reject[0] = max(0, self.api.reject[0] - 1)
            self._answer(401)
        else:
            self._answer(200, body=b'{"contacts": 3}')

    def _answer(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[Api]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    api = Api(base, FakeTokenService(allowed_urls=[f"{base}/api/"]))
    server.RequestHandlerClass = type("Handler", (_Handler,), {"api": api})
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield api
    server.shutdown()
    server.server_close()


def test_sends_the_bearer_token_and_reuses_it(api: Api) -> None:
    with api.session() as session:
        assert session.get(f"{api.base}/api/contacts", timeout=5).json() == {"contacts": 3}
        assert session.get(f"{api.base}/api/contacts", timeout=5).status_code == 200
    assert api.seen == [("/api/contacts", "Bearer token-1")] * 2
    assert len(api.service.invocations) == 1


@pytest.mark.parametrize("path", ["/elsewhere", "/apix/contacts", "/"])
def test_refuses_urls_outside_allowed_urls(api: Api, path: str) -> None:
    session = api.session()
    with pytest.raises(client.UrlNotAllowedError):
        session.get(f"{api.base}{path}", timeout=5)
    port = api.base.rsplit(":", 1)[1]
    with pytest.raises(client.UrlNotAllowedError):
        session.get(f"http://localhost:{port}/api/contacts", timeout=5)  # another host spelling
    assert api.seen == []


def test_refuses_a_redirect_outside_allowed_urls(api: Api) -> None:
    with pytest.raises(client.UrlNotAllowedError):
        api.session().get(f"{api.base}/api/redirect", timeout=5)
    assert [path for path, _ in api.seen] == ["/api/redirect"]


def test_follows_a_redirect_inside_allowed_urls(api: Api) -> None:
    assert api.session().get(f"{api.base}/api/inside-redirect", timeout=5).status_code == 200
    assert [path for path, _ in api.seen] == ["/api/inside-redirect", "/api/contacts"]


def test_one_forced_refresh_and_one_retry_on_401(api: Api) -> None:
    api.reject[0] = 1
    assert api.session().get(f"{api.base}/api/contacts", timeout=5).status_code == 200
    assert [r["force_refresh"] for r in api.service.requests] == [False, True]
    assert api.seen == [("/api/contacts", "Bearer token-1"), ("/api/contacts", "Bearer token-2")]


def test_no_retry_loop_on_repeated_401(api: Api) -> None:
    api.reject[0] = 10
    assert api.session().get(f"{api.base}/api/contacts", timeout=5).status_code == 401
    assert len(api.seen) == 2
    assert [r["force_refresh"] for r in api.service.requests] == [False, True]


def test_a_token_error_reaches_the_caller_typed(api: Api) -> None:
    api.service.answers.append({"error": {"code": "reauthorization_required", "message": "authorize again"}})
    with pytest.raises(client.ReauthorizationRequiredError):
        api.session().get(f"{api.base}/api/contacts", timeout=5)
    assert api.seen == []


def test_the_ssrf_guard_refuses_loopback_even_when_allowed(api: Api) -> None:
    """Under the strict policy a private address is refused, whatever the connection's allowed_urls say."""
    with pytest.raises(client.UnsafeUrlError) as raised:
        api.session(client.STRICT).get(f"{api.base}/api/contacts", timeout=5)
    assert raised.value.code == "unsafe_url"
    assert api.seen == []


@pytest.mark.parametrize(
    "url", ["https://10.0.0.1/", "https://169.254.169.254/latest/meta-data/", "https://[::ffff:127.0.0.1]/"]
)
def test_guarded_session_refuses_private_addresses(url: str) -> None:
    with pytest.raises(client.UnsafeUrlError) as raised:
        client.guarded_session(client.STRICT).get(url, timeout=5)
    assert raised.value.code == "unsafe_url"
