"""What a function's cold init imports: the costly libraries only where its code path needs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

WATCHED = (
    "aws_encryption_sdk",
    "authlib",
    "requests",
    "boto3",
    "pydantic",
    "pynamodb",
    "aws_lambda_powertools.event_handler",
    "aws_lambda_powertools.event_handler.openapi.models",
)
IMPORT_FUNCTION = """
import json, sys
watched = json.loads(sys.argv[1])
sys.path[:0] = sys.argv[2:]
import app
print(json.dumps(sorted(name for name in watched if name in sys.modules)))
"""
API_FUNCTIONS = sorted(p.parent.name for p in (REPO / "functions").glob("*/app.py") if "http_handler" in p.read_text())


# What Lambda sets with the template's `Tracing: Active`: Powertools' tracer is on and patches libraries.
TRACING_IN_LAMBDA = {
    "AWS_LAMBDA_FUNCTION_NAME": "cold-imports",
    "LAMBDA_TASK_ROOT": str(REPO / "functions"),
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
    "_X_AMZN_TRACE_ID": "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=1",
}


def _imported_by(function: str, watched: tuple[str, ...] = WATCHED, *, traced: bool = False) -> set[str]:
    paths = [str(REPO / "functions" / function), str(REPO / "layers/shared"), str(REPO / "clients/python/src")]
    env = os.environ | TRACING_IN_LAMBDA | {"POWERTOOLS_TRACE_DISABLED": "false"} if traced else None
    output = subprocess.run(
        [sys.executable, "-c", IMPORT_FUNCTION, json.dumps(watched), *paths],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    return set(json.loads(output.strip().splitlines()[-1]))


def test_get_token_imports_no_http_resolver_no_encryption_sdk_and_no_http_client() -> None:
    assert _imported_by("get_token") == {"pydantic", "pynamodb"}


def test_get_token_traced_as_in_lambda_imports_no_http_client_for_the_tracer_to_patch() -> None:
    assert _imported_by("get_token", traced=True) == {"pydantic", "pynamodb"}


def test_the_tracer_patches_requests_once_a_session_is_made() -> None:
    script = (
        "import sys\n"
        "from oauth_connections.core.observability import trace_http\n"
        "assert 'requests' not in sys.modules\n"
        "trace_http()\n"
        "import requests\n"
        "print(type(requests.Session.__dict__['request']).__name__)"
    )
    output = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ
        | TRACING_IN_LAMBDA
        | {"POWERTOOLS_TRACE_DISABLED": "false", "PYTHONPATH": str(REPO / "layers/shared")},
    ).stdout
    assert output.strip() == "FunctionWrapper"  # the X-Ray SDK's wrapper around Session.request


@pytest.mark.parametrize("function", [f for f in API_FUNCTIONS if f != "openapi"])
def test_an_api_function_leaves_the_openapi_models_to_the_document_function(function: str) -> None:
    imported = _imported_by(function)
    assert "aws_lambda_powertools.event_handler" in imported
    assert "aws_lambda_powertools.event_handler.openapi.models" not in imported
    assert not imported & {"aws_encryption_sdk", "authlib", "requests", "boto3"}


def test_the_document_function_serves_the_built_document_without_the_routes_or_the_openapi_models() -> None:
    routes = tuple(
        f"oauth_connections.entrypoints.http.{module}"
        for module in ("activity", "browser", "connections", "feeds", "providers", "openapi_build")
    )
    imported = _imported_by("openapi", (*routes, *WATCHED))
    assert "aws_lambda_powertools.event_handler" in imported
    assert not imported & {*routes, "aws_lambda_powertools.event_handler.openapi.models", "boto3", "requests"}


def test_the_api_functions_are_found() -> None:
    assert {"get_connection", "create_connection", "oauth_callback", "list_feeds", "openapi"} <= set(API_FUNCTIONS)
    assert not {"get_token", "call_api", "refresh_worker"} & set(API_FUNCTIONS)
