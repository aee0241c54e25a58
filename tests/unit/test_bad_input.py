"""Bad input gets a clear 4xx in the error shape, never a 5xx, and never echoes a secret."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import InProcessApi, LogCapture
from tests.unit.test_connections_api import connection_body, create

SSRF_URLS = [
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.1/token",
    "https://172.16.5.4/token",
    "https://192.168.1.1/token",
    "https://127.0.0.1/token",
    "https://[::1]/token",
    "https://[::ffff:127.0.0.1]/token",
    "https://[::ffff:169.254.169.254]/token",
    "https://[fd00:ec2::254]/token",
    "https://[fe80::1]/token",
    "https://localhost/token",  # a host name that resolves to 127.0.0.1
    "https://2130706433/token",  # 127.0.0.1 in decimal
    "https://0177.0.0.1/token",  # 127.0.0.1 in octal
    "https://0x7f.1/token",
    "https://0.0.0.0/token",
    "https://100.64.0.1/token",  # carrier-grade NAT
    "https://[64:ff9b::a00:1]/token",  # NAT64 of 10.0.0.1
    "https://internal.example.com/token",  # a public name with a private address
    "https://metadata.example.com/token",
    "https://mixed.example.com/token",  # one bad address among good ones
]
BAD_URLS = [
    "http://auth.example.com/token",  # not https
    "ftp://auth.example.com/token",
    "https:///token",
    "https://user:pw@auth.example.com/token",
    "https://auth.example.com:99999/token",
    "https://auth example.com/token",
    "https://-bad-.example.com/token",
    "https://auth.example.com/" + "a" * 2100,
    "javascript:alert(1)",
    "",
]

FIELD_CASES: list[tuple[str, Any]] = [
    ("name", None),
    ("name", ""),
    ("name", "   "),
    ("name", "x" * 101),
    ("name", 42),
    ("description", "x" * 1001),
    ("description", ["list"]),
    ("client_id", ""),
    ("client_id", "has space"),
    ("client_id", 12345),
    ("client_id", "x" * 513),
    ("client_secret", ""),
    ("client_secret", 123),
    ("client_secret", "s" * 4097),
    ("token_url", None),
    ("token_url", 5),
    ("scopes", "read write"),
    ("scopes", ["ok", ""]),
    ("scopes", ["has space"]),
    ("scopes", ["x"] * 101),
    ("scopes", [1, 2]),
    ("scope_delimiter", ";"),
    ("token_auth_method", "private_key_jwt"),
    ("token_auth_method", None),
    ("use_pkce", "yes"),
    ("use_pkce", 1),
    ("extra_authorize_params", {"state": "fixed"}),
    ("extra_authorize_params", {"redirect_uri": "https://evil.example.com"}),
    ("extra_authorize_params", {"ok": 1}),
    ("extra_authorize_params", {"bad key": "v"}),
    ("extra_authorize_params", {f"k{i}": "v" for i in range(21)}),
    ("extra_authorize_params", ["a"]),
    ("allowed_urls", "https://api.example.com"),
    ("allowed_urls", ["https://10.1.2.3/"]),
    ("allowed_urls", ["https://8.8.8.8/"] * 21),
    ("unknown_field", "x"),
    ("status", "connected"),
    ("id", "con_x"),
]


def assert_client_error(response: Any, *statuses: int) -> dict[str, Any]:
    assert response.status in statuses, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(("field", "value"), FIELD_CASES)
def test_bad_field_values_are_refused(api: InProcessApi, field: str, value: Any) -> None:
    body = connection_body(name=f"bad {field}")
    body[field] = value
    if value is None and field in ("name",):
        body.pop(field)
    assert_client_error(api.call("create_connection", body=body), 400, 422)


@pytest.mark.parametrize("field", ["token_url", "authorization_url", "revocation_url"])
@pytest.mark.parametrize("url", SSRF_URLS + BAD_URLS)
def test_unsafe_urls_are_refused(api: InProcessApi, field: str, url: str) -> None:
    error = assert_client_error(api.call("create_connection", body=connection_body(name="ssrf", **{field: url})), 422)
    assert any(detail["field"] == field for detail in error["details"])


@pytest.mark.parametrize("url", SSRF_URLS[:6])
def test_unsafe_urls_are_refused_on_update_too(api: InProcessApi, url: str) -> None:
    created = create(api, name=f"update ssrf {uuid.uuid4()}")
    assert_client_error(api.call("update_connection", connection_id=created["id"], body={"token_url": url}), 422)
    assert api.call("get_connection", connection_id=created["id"]).json()["token_url"] == created["token_url"]


@pytest.mark.parametrize(
    "raw",
    ["{not json", "[1, 2]", '"string"', "null", '{"name": "a",}', "\x00\x01"],
)
def test_malformed_bodies(api: InProcessApi, raw: str) -> None:
    assert_client_error(api.call("create_connection", raw_body=raw), 400, 422)


def test_missing_body(api: InProcessApi) -> None:
    assert_client_error(api.call("create_connection"), 400, 422)


def test_secret_and_auth_method_must_agree(api: InProcessApi) -> None:
    assert_client_error(api.call("create_connection", body=connection_body(name="a", token_auth_method="none")), 422)
    body = connection_body(name="b")
    body.pop("client_secret")
    assert_client_error(api.call("create_connection", body=body), 422)
    body["token_auth_method"] = "none"
    assert api.call("create_connection", body=body).status == 201


def test_oversized_body_is_413(api: InProcessApi) -> None:
    body = connection_body(name="huge", description="x" * 70_000)
    assert assert_client_error(api.call("create_connection", body=body), 413)["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("patch", "headers"),
    [
        ({}, {}),
        ({"name": None}, {}),
        ({"token_url": None}, {}),
        ({"client_id": None}, {}),
        ({"bogus": 1}, {}),
        ({"description": "x"}, {"if-match": "not-an-etag"}),
        ({"description": "x"}, {"if-match": '"99999999999999999999999"'}),
    ],
)
def test_bad_patches(api: InProcessApi, patch: dict[str, Any], headers: dict[str, str]) -> None:
    created = create(api, name=f"bad patch {uuid.uuid4()}")
    assert_client_error(
        api.call("update_connection", connection_id=created["id"], body=patch, headers=headers), 400, 412, 422
    )


@pytest.mark.parametrize("tag", ['"\u00b2"', 'W/"\u00b3"', '"\u0661\u0662"', '"\uff11"', '"1\u00b9"'])
def test_if_match_in_other_digits_is_400(api: InProcessApi, tag: str) -> None:
    """str.isdigit admits these; int() refuses some (superscript two) and reads others (fullwidth one) as a version."""
    created = create(api, name=f"odd etag {uuid.uuid4()}")
    response = api.call(
        "update_connection", connection_id=created["id"], body={"description": "x"}, headers={"if-match": tag}
    )
    assert assert_client_error(response, 400)["code"] == "invalid_if_match"
    assert api.call("get_connection", connection_id=created["id"]).json()["description"] == created["description"]


def public_client(**overrides: Any) -> dict[str, Any]:
    body = connection_body(name=f"public {uuid.uuid4()}", token_auth_method="none", **overrides)
    body.pop("client_secret")
    return body


def test_public_client_without_pkce_is_refused_on_create(api: InProcessApi) -> None:
    refused = api.call("create_connection", body=public_client(use_pkce=False))
    assert assert_client_error(refused, 422)["code"] == "pkce_required"
    assert api.call("create_connection", body=public_client()).status == 201
    assert api.call("create_connection", body=connection_body(name=f"c {uuid.uuid4()}", use_pkce=False)).status == 201


@pytest.mark.parametrize(
    ("start", "patch"),
    [
        ("public", {"use_pkce": False}),
        ("confidential_without_pkce", {"token_auth_method": "none", "client_secret": None}),
        ("confidential", {"token_auth_method": "none", "client_secret": None, "use_pkce": False}),
    ],
)
def test_public_client_without_pkce_is_refused_on_update(api: InProcessApi, start: str, patch: dict[str, Any]) -> None:
    body = {
        "public": public_client(),
        "confidential_without_pkce": connection_body(name=f"c {uuid.uuid4()}", use_pkce=False),
        "confidential": connection_body(name=f"c {uuid.uuid4()}"),
    }[start]
    created = api.call("create_connection", body=body).json()
    refused = api.call("update_connection", connection_id=created["id"], body=patch)
    assert assert_client_error(refused, 422)["code"] == "pkce_required"
    stored = api.call("get_connection", connection_id=created["id"]).json()
    assert (stored["token_auth_method"], stored["use_pkce"], stored["version"]) == (
        created["token_auth_method"],
        created["use_pkce"],
        created["version"],
    )


@pytest.mark.parametrize("connection_id", ["nope", "con_" + "0" * 26 + "x", "con_../../x", "x" * 65])
def test_malformed_ids_are_not_found_or_invalid(api: InProcessApi, connection_id: str) -> None:
    for function in ("get_connection", "delete_connection"):
        assert_client_error(api.call(function, connection_id=connection_id), 404, 422)


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5"])
def test_bad_limits(api: InProcessApi, limit: str) -> None:
    assert_client_error(api.call("list_connections", query={"limit": limit}), 400, 422)


def test_secret_never_in_responses_or_logs(api: InProcessApi, service_logs: LogCapture) -> None:
    secret = "top-secret-client-secret-7f3a"
    other = "another-secret-value-9b21"
    created = create(api, name="leak check", client_secret=secret)
    responses = [
        api.call("get_connection", connection_id=created["id"]),
        api.call("list_connections"),
        api.call("update_connection", connection_id=created["id"], body={"client_secret": other}),
        # Rejected requests must not echo the secret either.
        api.call("create_connection", body=connection_body(name="leak check", client_secret=secret)),
        api.call("create_connection", body=connection_body(name="x" * 200, client_secret=secret)),
        api.call("update_connection", connection_id=created["id"], body={"client_secret": secret, "bogus": secret}),
        api.call(
            "create_connection", body=connection_body(name="leak 2", client_secret=secret, token_auth_method="none")
        ),
        api.call("delete_connection", connection_id=created["id"]),
    ]
    logs = service_logs.text
    assert "connection created" in logs and "request refused" in logs  # the capture saw the service's logs
    for response in responses:
        assert secret not in response.text and other not in response.text
        assert secret not in repr(response.headers)
    assert secret not in logs and other not in logs


JSON_TEXT = '{"name": "x", "client_id": "a", "client_secret": "b", "token_url": "https://169.254.169.254/token"}'


@pytest.mark.parametrize(
    ("function", "content_type"),
    [
        ("create_connection", "application/x-www-form-urlencoded"),
        ("create_connection", "text/plain"),
        ("update_connection", "application/x-www-form-urlencoded"),
        ("start_authorization", "application/x-www-form-urlencoded"),
        ("create_feed", "application/xml"),
        ("update_feed", "multipart/form-data; boundary=x"),
        ("update_feed", "application/merge-patch+json"),
    ],
)
def test_a_body_that_is_not_declared_json_is_415(api: InProcessApi, function: str, content_type: str) -> None:
    """A JSON text under another media type is refused as a whole, never read as form fields."""
    response = api.call(function, raw_body=JSON_TEXT, headers={"content-type": content_type})
    assert response.status == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert "Content-Type: application/json" in response.json()["error"]["message"]


def test_an_empty_body_under_another_media_type_is_415_in_the_error_shape(api: InProcessApi) -> None:
    response = api.call("create_connection", raw_body="", headers={"content-type": "text/plain"})
    assert response.status == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/json;charset=UTF-8"]
)
def test_json_media_types_with_parameters_are_read(api: InProcessApi, content_type: str) -> None:
    response = api.call("create_connection", raw_body=JSON_TEXT, headers={"content-type": content_type})
    assert response.status == 422, response.text
    detail = response.json()["error"]["details"][0]
    assert (detail["field"], detail["issue"]) == ("token_url", "unsafe_url")
