"""Driving the service through the local stack: its HTTP API, its Lambda endpoint and the real provider.

Shared by the integration and the browser tests. Everything goes over the wire (the API on
``stack.api_url``, GetTokenFunction through the Lambda Invoke API); only ``age_tokens`` and
``stored_item`` touch the embedded DynamoDB directly, to set up a clock state or to observe the item.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from devstack import Stack
from tests.support.provider import AUTH_METHOD_CLIENTS, OidcProvider, connection_body
from tests.support.stack_fixtures import ApiClient
from tests.support.user_agent import AuthorizationResult, walk_authorization

CALLBACK_PATH = "/oauth2/callback"
GET_TOKEN = "GetTokenFunction"
CLIENTS = AUTH_METHOD_CLIENTS
# How the storage layer writes datetimes (pynamodb's UTCDateTimeAttribute).
_STORED_DATETIME = "%Y-%m-%dT%H:%M:%S.%f%z"


def new_tenant(prefix: str = "it") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def callback_url(stack: Stack) -> str:
    return stack.api_url + CALLBACK_PATH


def query_of(url: str) -> dict[str, str]:
    """The query parameters of a URL, one value per name (a repeated name fails the test)."""
    parsed = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in parsed.values()), url
    return {name: values[0] for name, values in parsed.items()}


def without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


# ------------------------------------------------------------------ the HTTP API


def create_connection(
    api: ApiClient, provider: OidcProvider, method: str = "client_secret_basic", **extra: Any
) -> dict[str, Any]:
    """A connection to the real provider, its endpoints discovered from the issuer by the service."""
    response = api.post("/connections", json=connection_body(provider.issuer, method, **extra))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def start_authorization(api: ApiClient, connection_id: str, return_url: str) -> str:
    response = api.post(f"/connections/{connection_id}/authorize", json={"return_url": return_url})
    assert response.status_code == 200, response.text
    redirect_url: str = response.json()["redirect_url"]
    return redirect_url


def authorize(
    api: ApiClient, connection_id: str, return_url: str, *, approve: bool = True
) -> tuple[str, AuthorizationResult]:
    """Start a flow and walk it in a fresh browser-like session up to the redirect back to our callback.
    Returns (redirect_url, result); the callback is not requested yet."""
    redirect_url = start_authorization(api, connection_id, return_url)
    result = walk_authorization(redirect_url, session=requests.Session(), approve=approve)
    assert result.callback_url.startswith(callback_url(api.stack) + "?"), result.callback_url
    return redirect_url, result


def connect(api: ApiClient, connection_id: str, return_url: str) -> requests.Response:
    """The whole flow; returns our callback's answer (a 302 back to the return URL)."""
    _, result = authorize(api, connection_id, return_url)
    response = result.follow()
    assert response.status_code == 302, response.text
    assert query_of(response.headers["Location"])["status"] == "connected", response.headers["Location"]
    return response


# ------------------------------------------------------------------ GetTokenFunction over the Invoke API


@dataclass(frozen=True)
class Invocation:
    status: int
    function_error: str | None
    payload: Any
    seconds: float = 0.0


def invoke(client: Any, payload: Any, function: str = GET_TOKEN) -> Invocation:
    """One RequestResponse invocation through a boto3 Lambda client of the local endpoint."""
    started = time.monotonic()
    response = client.invoke(FunctionName=function, Payload=json.dumps(payload).encode())
    body = response["Payload"].read()
    return Invocation(
        status=int(response["StatusCode"]),
        function_error=response.get("FunctionError"),
        payload=json.loads(body) if body else None,
        seconds=time.monotonic() - started,
    )


def get_token(stack: Stack, tenant_id: str, connection_id: str, **fields: Any) -> dict[str, Any]:
    """GetTokenFunction's answer, asserted to be a contract answer (never a function error)."""
    result = invoke(stack.lambda_client(), {"tenant_id": tenant_id, "connection_id": connection_id} | fields)
    assert result.status == 200 and result.function_error is None, result
    assert isinstance(result.payload, dict), result
    return result.payload


def refreshes(provider: OidcProvider) -> int:
    """refresh_token grants the provider has received since it started."""
    return int(provider.stats()["token_requests"]["by_grant_type"].get("refresh_token", 0))


# ------------------------------------------------------------------ the stored item (setup and observation)


def _key(tenant_id: str, connection_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"TENANT#{tenant_id}"}, "sk": {"S": f"CONNECTION#{connection_id}"}}


def stored_item(stack: Stack, tenant_id: str, connection_id: str) -> dict[str, Any]:
    item: dict[str, Any] = stack.boto3_client("dynamodb").get_item(
        TableName=stack.physical_ids["ConnectionsTable"], Key=_key(tenant_id, connection_id), ConsistentRead=True
    )["Item"]
    return item


def stored_datetime(item: dict[str, Any], name: str) -> datetime | None:
    value = item.get(name, {}).get("S")
    return datetime.strptime(value, _STORED_DATETIME) if value else None


def age_tokens(stack: Stack, tenant_id: str, connection_id: str, seconds: int = 3600) -> None:
    """Make the stored tokens look older than the force-refresh debounce (as if obtained an hour ago)."""
    past = (datetime.now(UTC) - timedelta(seconds=seconds)).strftime(_STORED_DATETIME)
    stack.boto3_client("dynamodb").update_item(
        TableName=stack.physical_ids["ConnectionsTable"],
        Key=_key(tenant_id, connection_id),
        UpdateExpression="SET connected_at = :past, refreshed_at = :past",
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeValues={":past": {"S": past}},
    )
