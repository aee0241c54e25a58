"""An unexpected failure answers 500 in the error shape with the request's correlation id, and is logged
with its trace: in a route, in a browser route, and before any route runs (the body-size check)."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from oauth_connections.core.config import get_settings
from oauth_connections.entrypoints.http.resolver import http_handler
from tests.conftest import InProcessApi, LambdaContext, LogCapture, Resources, sample_event
from tests.unit.test_connections_api import connection_body, create

REQUEST_ID = sample_event("get_connection")["requestContext"]["requestId"]
MISSING_KEY_ARN = "arn:aws:kms:eu-central-1:123456789012:key/00000000-0000-0000-0000-000000000000"


def assert_internal_error(response: Any, logs: LogCapture) -> None:
    assert response.status == 500, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "internal_error"
    assert error["message"]
    assert error["correlation_id"] == REQUEST_ID
    failures = [json.loads(line) for line in logs.lines if "request failed unexpectedly" in line]
    assert len(failures) == 1, logs.text
    assert failures[0]["level"] == "ERROR"
    assert failures[0]["correlation_id"] == REQUEST_ID
    assert failures[0]["exception"].startswith("Traceback (most recent call last)")


def _reconfigure(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def test_a_configuration_error_before_routing(
    api: InProcessApi, service_logs: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The body-size check reads the settings before any route: a setting it cannot parse."""
    _reconfigure(monkeypatch, MAX_BODY_BYTES="sixty-four kilobytes")
    assert_internal_error(api.call("create_connection", body=connection_body(name="broken config")), service_logs)


def test_the_embedded_aws_refusing_in_a_route(
    api: InProcessApi, service_logs: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = create(api, name="missing table")
    _reconfigure(monkeypatch, CONNECTIONS_TABLE_NAME="no-such-table")
    assert_internal_error(api.call("get_connection", connection_id=created["id"]), service_logs)


def test_kms_refusing_on_create(api: InProcessApi, service_logs: LogCapture, monkeypatch: pytest.MonkeyPatch) -> None:
    _reconfigure(monkeypatch, ENCRYPTION_KEY_ARN=MISSING_KEY_ARN)
    assert_internal_error(api.call("create_connection", body=connection_body(name="no key")), service_logs)


@pytest.mark.parametrize(
    ("function", "query"),
    [("authorize_redirect", {"flow": "a-handle"}), ("oauth_callback", {"state": "a-state", "code": "c"})],
)
def test_browser_routes_fail_in_the_error_shape_too(
    service_env: Resources,
    service_logs: LogCapture,
    monkeypatch: pytest.MonkeyPatch,
    function: str,
    query: dict[str, str],
) -> None:
    _reconfigure(monkeypatch, CONNECTIONS_TABLE_NAME="no-such-table")
    response = InProcessApi().call(function, query=query)
    assert_internal_error(response, service_logs)
    assert "set-cookie" not in {name.lower() for name in response.headers}


def test_the_handler_answers_any_exception(service_env: Resources, service_logs: LogCapture) -> None:
    """The handler's own contract, with a route of this test that fails as a bug would."""
    router = Router()  # type: ignore[no-untyped-call]

    @router.get("/connections/<connection_id>")
    def broken(connection_id: str) -> Response[Any]:
        raise KeyError(connection_id)

    result = http_handler(router)(sample_event("get_connection"), cast(Any, LambdaContext()))
    assert result["statusCode"] == 500
    body = json.loads(result["body"])
    assert body == {
        "error": {
            "code": "internal_error",
            "message": body["error"]["message"],
            "correlation_id": REQUEST_ID,
        }
    }
    failure = json.loads(next(line for line in service_logs.lines if "request failed unexpectedly" in line))
    assert "KeyError" in failure["exception"]
    assert failure["exception_name"] == "KeyError"


def test_without_a_request_id_the_lambda_request_id_is_used(service_env: Resources, service_logs: LogCapture) -> None:
    router = Router()  # type: ignore[no-untyped-call]

    @router.get("/connections/<connection_id>")
    def broken(connection_id: str) -> Response[Any]:
        raise RuntimeError("a bug")

    event = sample_event("get_connection")
    del event["requestContext"]["requestId"]
    result = http_handler(router)(event, cast(Any, LambdaContext()))
    assert json.loads(result["body"])["error"]["correlation_id"] == LambdaContext.aws_request_id
