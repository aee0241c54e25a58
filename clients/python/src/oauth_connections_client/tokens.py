"""Asking GetTokenFunction for a connection's access token, over the Lambda Invoke API."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from oauth_connections_client.errors import ERRORS_BY_CODE, TokenServiceError

DEFAULT_FUNCTION_NAME = "GetTokenFunction"


@dataclass(frozen=True)
class AccessToken:
    access_token: str = field(repr=False)
    token_type: str
    expires_at: datetime | None
    scopes: tuple[str, ...]
    allowed_urls: tuple[str, ...]

    def valid_for(self, seconds: float) -> bool:
        return self.expires_at is None or self.expires_at.timestamp() - time.time() >= seconds


@cache
def _lambda_client(endpoint_url: str | None) -> Any:
    import boto3

    return boto3.client("lambda", endpoint_url=endpoint_url)


def get_access_token(
    tenant_id: str,
    connection_id: str,
    *,
    min_valid_seconds: int = 60,
    force_refresh: bool = False,
    correlation_id: str | None = None,
    function_name: str | None = None,
    lambda_endpoint_url: str | None = None,
    lambda_client: Any = None,
) -> AccessToken:
    """Invoke GetTokenFunction; raises a TokenServiceError subclass for each of its error codes."""
    request: dict[str, Any] = {
        "tenant_id": tenant_id,
        "connection_id": connection_id,
        "min_valid_seconds": min_valid_seconds,
        "force_refresh": force_refresh,
    }
    if correlation_id:
        request["correlation_id"] = correlation_id
    client = lambda_client or _lambda_client(lambda_endpoint_url)
    response = client.invoke(
        FunctionName=function_name or os.environ.get("GET_TOKEN_FUNCTION_NAME", DEFAULT_FUNCTION_NAME),
        InvocationType="RequestResponse",
        Payload=json.dumps(request).encode(),
    )
    payload = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError") or not isinstance(payload, dict):
        raise TokenServiceError("the token service failed")
    if "error" in payload:
        error = payload["error"]
        cls = ERRORS_BY_CODE.get(str(error.get("code")), TokenServiceError)
        raise cls(str(error.get("message", "")), retry_after=error.get("retry_after_seconds"))
    expires_at = payload.get("expires_at")
    return AccessToken(
        access_token=payload["access_token"],
        token_type=payload.get("token_type") or "Bearer",
        expires_at=datetime.fromisoformat(expires_at) if expires_at else None,
        scopes=tuple(payload.get("scopes") or ()),
        allowed_urls=tuple(payload.get("allowed_urls") or ()),
    )
