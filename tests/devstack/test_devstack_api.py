"""The local API gateway: JWT authorizer, routing and the payload format 2.0 event/response."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import pytest
import requests

from devstack import Stack
from devstack.tokens import generate_key
from tests.support.stack_fixtures import ApiClient


def _event(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    event: dict[str, Any] = response.json()["event"]
    return event


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = "A" if signature[10] != "A" else "B"
    return ".".join([header, payload, signature[:10] + flipped + signature[11:]])


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda stack: None, id="missing"),
        pytest.param(lambda stack: "not-a-jwt", id="garbage"),
        pytest.param(lambda stack: _tampered(stack.mint_token("acme")), id="bad-signature"),
        pytest.param(lambda stack: stack.mint_token("acme", key=generate_key()), id="unknown-key"),
        pytest.param(lambda stack: stack.mint_token("acme", issuer="https://elsewhere.example"), id="wrong-issuer"),
        pytest.param(lambda stack: stack.mint_token("acme", audience="someone-else"), id="wrong-audience"),
        pytest.param(lambda stack: stack.mint_token("acme", expires_in=-5), id="expired"),
        pytest.param(lambda stack: stack.mint_token("acme", claims={"exp": None}), id="no-exp"),
        pytest.param(lambda stack: stack.mint_token("acme", claims={"nbf": int(time.time()) + 600}), id="not-yet"),
    ],
)
def test_invalid_tokens_are_rejected(fixture_api: ApiClient, fixture_stack: Stack, make_token: Any) -> None:
    """As the JWT authorizer answers: 401, its own body, a challenge, and no content-type."""
    token = make_token(fixture_stack)
    response = fixture_api.with_token(token).get("/items/1")
    assert response.status_code == 401
    assert response.content == b'{"message":"Unauthorized"}'
    assert response.headers["content-length"] == "26"
    assert "content-type" not in response.headers
    assert response.headers["apigw-requestid"]
    challenge = response.headers["www-authenticate"]
    if token is None:
        assert challenge == "Bearer"
    else:
        assert re.fullmatch(r'Bearer scope="" error="invalid_token" error_description="[^"]+"', challenge), challenge


def test_the_authorizer_names_why_a_token_is_refused(fixture_api: ApiClient, fixture_stack: Stack) -> None:
    response = fixture_api.with_token(fixture_stack.mint_token("acme", audience="someone-else")).get("/items/1")
    assert response.headers["www-authenticate"] == (
        'Bearer scope="" error="invalid_token" error_description="the token does not have a valid audience"'
    )
    expired = fixture_api.with_token(fixture_stack.mint_token("acme", expires_in=-5)).get("/items/1")
    assert expired.headers["www-authenticate"].endswith('error_description="the token has expired"')


def test_valid_token_claims_reach_the_function(fixture_api: ApiClient) -> None:
    event = _event(fixture_api.as_tenant("acme", "alice", roles=["admin", "viewer"]).get("/items/1"))
    jwt_context = event["requestContext"]["authorizer"]["jwt"]
    claims = jwt_context["claims"]
    assert claims["tenant_id"] == "acme"
    assert claims["sub"] == "alice"
    assert claims["aud"] == "oauth-connections-local"
    assert claims["roles"] == "[admin viewer]"  # API Gateway flattens claim values to strings
    assert isinstance(claims["exp"], str)
    assert jwt_context["scopes"] is None
    assert event["headers"]["authorization"].startswith("Bearer ")


def test_token_without_bearer_prefix_is_accepted(fixture_api: ApiClient, fixture_stack: Stack) -> None:
    token = fixture_stack.mint_token("acme")
    assert fixture_api.get("/items/1", headers={"Authorization": token}).status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"scope": None}, id="no-scope"),
        pytest.param({"scope": "other items.write"}, id="other-scopes"),
        pytest.param({"scope": None, "scp": ["other"]}, id="other-scp"),
        pytest.param({"scope": "items.read.all"}, id="prefix-is-not-a-match"),
    ],
)
def test_a_token_without_the_route_scope_is_forbidden(fixture_api: ApiClient, claims: dict[str, Any]) -> None:
    response = fixture_api.as_tenant("acme", **claims).get("/scoped")
    assert response.status_code == 403
    assert response.json() == {"message": "Forbidden"}


@pytest.mark.parametrize(
    ("claims", "scopes"),
    [
        pytest.param({"scope": "items.read other"}, ["items.read", "other"], id="scope-string"),
        pytest.param({"scope": None, "scp": ["other", "items.read"]}, ["other", "items.read"], id="scp-list"),
        pytest.param({"scope": None, "scp": "items.read"}, ["items.read"], id="scp-string"),
        pytest.param({}, ["items.read"], id="default-token-carries-every-route-scope"),
    ],
)
def test_a_token_with_the_route_scope_passes(fixture_api: ApiClient, claims: dict[str, Any], scopes: list[str]) -> None:
    event = _event(fixture_api.as_tenant("acme", **claims).get("/scoped"))
    assert event["requestContext"]["authorizer"]["jwt"]["scopes"] == scopes


def test_route_without_authorizer(fixture_api: ApiClient) -> None:
    event = _event(fixture_api.get("/public"))
    assert "authorizer" not in event["requestContext"]
    assert event["routeKey"] == "GET /public"


def test_path_query_cookies_and_headers_round_trip(fixture_api: ApiClient, fixture_stack: Stack) -> None:
    client = fixture_api.as_tenant("acme")
    response = client.get(
        "/items/abc%20d?x=1&x=2&empty=&set_cookie=session%3Dabc%3B%20HttpOnly&status=201",
        headers={"Cookie": "a=1; b=2", "X-Repeated": "one", "User-Agent": "devstack-test"},
    )
    assert response.status_code == 201
    assert response.headers["x-echo"] == "yes"
    assert response.headers["set-cookie"] == "session=abc; HttpOnly"
    assert response.headers["apigw-requestid"]
    event = response.json()["event"]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /items/{item_id}"
    assert event["rawPath"] == "/items/abc%20d"
    assert event["rawQueryString"] == "x=1&x=2&empty=&set_cookie=session%3Dabc%3B%20HttpOnly&status=201"
    assert event["pathParameters"] == {"item_id": "abc d"}
    assert event["queryStringParameters"]["x"] == "1,2"
    assert event["queryStringParameters"]["empty"] == ""
    assert event["cookies"] == ["a=1", "b=2"]
    headers = event["headers"]
    assert "cookie" not in headers
    assert headers["x-repeated"] == "one"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["host"] == fixture_stack.api_url.removeprefix("http://")
    assert event["isBase64Encoded"] is False
    assert "body" not in event
    context = event["requestContext"]
    assert context["http"] == {
        "method": "GET",
        "path": "/items/abc%20d",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "devstack-test",
    }
    assert context["stage"] == "$default"
    assert context["routeKey"] == "GET /items/{item_id}"
    assert context["accountId"] == "123456789012"
    assert context["apiId"] == fixture_stack.physical_ids["HttpApi"]
    assert context["domainName"] == "127.0.0.1"
    assert context["requestId"] == response.headers["apigw-requestid"]
    assert abs(context["timeEpoch"] / 1000 - time.time()) < 60
    assert context["time"].endswith("+0000")


def test_repeated_headers_are_comma_joined(fixture_api: ApiClient) -> None:
    # requests cannot repeat a header; http.client can.
    import http.client
    import urllib.parse

    url = urllib.parse.urlsplit(fixture_api.base_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    connection.putrequest("GET", "/public")
    connection.putheader("X-Multi", "a")
    connection.putheader("X-Multi", "b")
    connection.endheaders()
    body = json.loads(connection.getresponse().read())
    connection.close()
    assert body["event"]["headers"]["x-multi"] == "a,b"


def test_greedy_path_json_and_binary_bodies(fixture_api: ApiClient) -> None:
    client = fixture_api.as_tenant("acme")
    event = _event(client.post("/files/a/b/c.txt", json={"x": 1}))
    assert event["routeKey"] == "ANY /files/{proxy+}"
    assert event["pathParameters"] == {"proxy": "a/b/c.txt"}
    assert json.loads(event["body"]) == {"x": 1}
    assert event["isBase64Encoded"] is False

    event = _event(client.put("/files/x", data=b"\x00\x01\xff", headers={"Content-Type": "application/octet-stream"}))
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\x00\x01\xff"

    event = _event(client.post("/files/form", data={"a": "1"}))  # form bodies arrive base64-encoded
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"a=1"


def test_response_mapping(fixture_api: ApiClient) -> None:
    client = fixture_api.as_tenant("acme")
    binary = client.get("/items/1?mode=binary")
    assert binary.status_code == 200
    assert binary.content == b"\x00\x01\x02\xff"
    assert binary.headers["content-type"] == "application/octet-stream"

    plain = client.get("/items/1?mode=plain")  # no statusCode: API Gateway answers the JSON as is
    assert plain.status_code == 200
    assert plain.json() == {"plain": True}
    assert plain.headers["content-type"] == "application/json"

    for mode in ("raise", "malformed"):
        failed = client.get(f"/items/1?mode={mode}")
        assert failed.status_code == 500
        assert failed.json() == {"message": "Internal Server Error"}


def test_unknown_routes_and_methods(fixture_api: ApiClient) -> None:
    client = fixture_api.as_tenant("acme")
    for method, path in [("GET", "/nope"), ("DELETE", "/items/1"), ("GET", "/items"), ("GET", "/items/1/2")]:
        response = client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.content == b'{"message":"Not Found"}'
        assert response.headers["content-type"] == "application/json"
        assert response.headers["apigw-requestid"]
    # Before any authorizer: an unknown route is 404 with or without a token.
    anonymous = fixture_api.get("/nope")
    assert (anonymous.status_code, anonymous.content) == (404, b'{"message":"Not Found"}')


def test_body_over_10_mb_is_refused(fixture_api: ApiClient) -> None:
    response = fixture_api.as_tenant("acme").post("/echo", data=b"x" * (10 * 1024 * 1024 + 1))
    assert response.status_code == 413


def test_function_logs_capture_output(fixture_api: ApiClient, fixture_stack: Stack) -> None:
    marker = f"log-marker-{time.time_ns()}"
    fixture_stack.invoke("EchoFunction", {"marker": marker})
    # The function's own output comes through a pipe, so it may land a moment after the answer.
    deadline = time.monotonic() + 5
    lines = fixture_stack.function_logs("EchoFunction")
    while not any(marker in line for line in lines):
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)
        lines = fixture_stack.function_logs("EchoFunction")
    assert any(line.startswith("REPORT RequestId:") for line in lines)
    assert any(marker in line for line in fixture_stack.function_logs())
