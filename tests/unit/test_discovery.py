"""Creating a connection from an issuer: RFC 8414 / OpenID discovery, checked and guarded."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from oauth_connections.oauth.discovery import metadata_urls
from tests.conftest import InProcessApi
from tests.support.provider import OidcProvider


def test_metadata_urls_insert_the_path() -> None:
    assert metadata_urls("https://id.example.com/tenant/a") == [
        "https://id.example.com/.well-known/oauth-authorization-server/tenant/a",
        "https://id.example.com/tenant/a/.well-known/openid-configuration",
    ]
    assert metadata_urls("https://id.example.com") == [
        "https://id.example.com/.well-known/oauth-authorization-server",
        "https://id.example.com/.well-known/openid-configuration",
    ]


class _Metadata(http.server.BaseHTTPRequestHandler):
    document: ClassVar[dict[str, Any]] = {}

    def do_GET(self) -> None:
        body = json.dumps(self.document).encode()
        self.send_response(200 if self.path.endswith("openid-configuration") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def metadata_server() -> Iterator[tuple[str, type[_Metadata]]]:
    handler = type("Handler", (_Metadata,), {"document": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def create(api: InProcessApi, issuer: str, **extra: Any) -> Any:
    body = {"name": f"discovered {issuer} {sorted(extra)}", "client_id": "cid", "client_secret": "s", "issuer": issuer}
    return api.call("create_connection", body=body | extra)


def test_discovery_fills_the_endpoints(flow_api: InProcessApi, provider: OidcProvider) -> None:
    response = create(flow_api, provider.issuer)
    assert response.status == 201, response.text
    body = response.json()
    assert body["issuer"] == provider.issuer
    assert body["token_url"] == provider.token_endpoint
    assert body["authorization_url"] == provider.authorization_endpoint
    assert body["revocation_url"] == provider.revocation_endpoint


def test_explicit_urls_win_over_discovery(flow_api: InProcessApi, provider: OidcProvider) -> None:
    response = create(flow_api, provider.issuer, token_url="https://token.example.com/oauth/token")
    assert response.json()["token_url"] == "https://token.example.com/oauth/token"


def test_issuer_must_match_exactly(flow_api: InProcessApi, metadata_server: tuple[str, type[_Metadata]]) -> None:
    url, handler = metadata_server
    handler.document = {"issuer": url + "/other", "token_endpoint": url + "/token"}
    response = create(flow_api, url)
    assert response.status == 422
    assert response.json()["error"]["code"] == "discovery_failed"


def test_discovered_endpoints_pass_the_ssrf_guard(
    flow_api: InProcessApi, metadata_server: tuple[str, type[_Metadata]]
) -> None:
    url, handler = metadata_server
    handler.document = {"issuer": url, "token_endpoint": "https://169.254.169.254/token"}
    response = create(flow_api, url)
    assert response.status == 422
    assert "token_url" in response.json()["error"]["message"]


def test_unreachable_issuer_is_a_client_error(flow_api: InProcessApi) -> None:
    from tests.conftest import free_port

    response = create(flow_api, f"http://127.0.0.1:{free_port()}")
    assert response.status == 422
    assert response.json()["error"]["code"] == "discovery_failed"


def test_private_issuer_is_refused_before_any_request(flow_api: InProcessApi) -> None:
    response = create(flow_api, "https://10.0.0.5")
    assert response.status == 422
