"""The consumer client against the service itself: GetTokenFunction's real handler, the real provider and store.

The client's own tests (clients/python/tests) answer for the service with a fake; these check the two agree.
"""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import oauth_connections_client as client
from tests.conftest import InProcessApi, LambdaContext, load_handler
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider
from tests.unit.flow_helpers import connect, create_connection
from tests.unit.test_get_token import age_tokens

LOOPBACK = client.UrlPolicy(allow_insecure_loopback=True)


class InProcessLambda:
    """Stands in for boto3's Lambda transport only: the payload goes to the real handler, in-process."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def invoke(self, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:
        assert FunctionName == "GetTokenFunction"
        assert InvocationType == "RequestResponse"
        request = json.loads(Payload)
        self.requests.append(request)
        result = load_handler("get_token")(request, LambdaContext())
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(result).encode())}


class _Resource(http.server.BaseHTTPRequestHandler):
    """A protected API: a bearer token must be active at the provider (introspection)."""

    provider: ClassVar[OidcProvider]
    reject_next: ClassVar[list[int]] = [0]
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        type(self).seen.append(self.path)
        active = bool(token) and self.provider.introspect(token, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"]
        if self.path.startswith("/api/redirect"):
            self.send_response(302)
            self.send_header("Location", "/elsewhere/secret")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not active or self.reject_next[0] > 0:
            self.reject_next[0] = max(0, self.reject_next[0] - 1)
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b'{"contacts": 3}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def resource(provider: OidcProvider) -> Iterator[tuple[str, type[_Resource]]]:
    handler = type("Resource", (_Resource,), {"provider": provider, "reject_next": [0], "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


@pytest.fixture
def session_for(
    flow_api: InProcessApi, provider: OidcProvider, resource: tuple[str, type[_Resource]]
) -> tuple[client.AuthorizedSession, InProcessLambda, type[_Resource], str]:
    base, handler = resource
    connection = create_connection(flow_api, provider, allowed_urls=[f"{base}/api/"])
    connect(flow_api, provider, connection)
    age_tokens(flow_api.tenant, connection["id"])
    transport = InProcessLambda()
    session = client.AuthorizedSession(flow_api.tenant, connection["id"], policy=LOOPBACK, lambda_client=transport)
    return session, transport, handler, base


def test_sends_the_bearer_token(session_for: Any) -> None:
    session, transport, _handler, base = session_for
    response = session.get(f"{base}/api/contacts", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"contacts": 3}
    assert session.get(f"{base}/api/contacts", timeout=5).status_code == 200
    assert len(transport.requests) == 1  # the token is reused while valid


@pytest.mark.parametrize("path", ["/elsewhere", "/apix/contacts", "/"])
def test_refuses_urls_outside_allowed_urls(session_for: Any, path: str) -> None:
    session, _, handler, base = session_for
    with pytest.raises(client.UrlNotAllowedError):
        session.get(f"{base}{path}", timeout=5)
    with pytest.raises(client.UrlNotAllowedError):
        session.get(f"http://localhost:{base.rsplit(':', 1)[1]}/api/contacts", timeout=5)
    assert handler.seen == []


def test_refuses_a_redirect_outside_allowed_urls(session_for: Any) -> None:
    session, _, handler, base = session_for
    with pytest.raises(client.UrlNotAllowedError):
        session.get(f"{base}/api/redirect", timeout=5)
    assert handler.seen == ["/api/redirect"]


def test_one_forced_refresh_and_one_retry_on_401(session_for: Any) -> None:
    session, transport, handler, base = session_for
    handler.reject_next[0] = 1
    assert session.get(f"{base}/api/contacts", timeout=5).status_code == 200
    assert [r["force_refresh"] for r in transport.requests] == [False, True]
    assert len(handler.seen) == 2


def test_no_retry_loop_on_repeated_401(session_for: Any) -> None:
    session, transport, handler, base = session_for
    handler.reject_next[0] = 10
    assert session.get(f"{base}/api/contacts", timeout=5).status_code == 401
    assert len(handler.seen) == 2
    assert [r["force_refresh"] for r in transport.requests] == [False, True]


def test_typed_errors(flow_api: InProcessApi, provider: OidcProvider) -> None:
    transport = InProcessLambda()
    with pytest.raises(client.ConnectionNotFoundError):
        client.get_access_token(flow_api.tenant, "con_" + "0" * 26, lambda_client=transport)
    pending = create_connection(flow_api, provider)
    with pytest.raises(client.ConnectionNotConnectedError):
        client.get_access_token(flow_api.tenant, pending["id"], lambda_client=transport)
    with pytest.raises(client.InvalidTokenRequestError):
        client.get_access_token(flow_api.tenant, pending["id"], min_valid_seconds=-5, lambda_client=transport)
    token = repr(client.AccessToken("secret-value", "Bearer", None, (), ()))
    assert "secret-value" not in token
