"""A stand-in for the remote GetTokenFunction behind a boto3 Lambda client: the client is the unit here."""

from __future__ import annotations

import io
import json
from typing import Any


class FakeTokenService:
    """Answers Invoke like GetTokenFunction does: a token, or the next queued error answer."""

    def __init__(self, allowed_urls: list[str] | None = None) -> None:
        self.allowed_urls = allowed_urls or []
        self.invocations: list[dict[str, Any]] = []
        self.answers: list[dict[str, Any]] = []
        self.function_error: str | None = None
        self.issued = 0

    def invoke(self, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:
        self.invocations.append({"FunctionName": FunctionName, "InvocationType": InvocationType} | json.loads(Payload))
        if self.function_error:
            return {
                "StatusCode": 200,
                "FunctionError": self.function_error,
                "Payload": io.BytesIO(b'{"errorType": "x"}'),
            }
        answer = self.answers.pop(0) if self.answers else self._token()
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(answer).encode())}

    def _token(self) -> dict[str, Any]:
        self.issued += 1
        return {
            "access_token": f"token-{self.issued}",
            "token_type": "Bearer",
            "expires_at": "2999-01-01T00:00:00+00:00",
            "scopes": ["read"],
            "allowed_urls": self.allowed_urls,
        }

    @property
    def requests(self) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in call.items() if k not in ("FunctionName", "InvocationType")} for call in self.invocations
        ]
