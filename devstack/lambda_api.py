"""Local Lambda endpoint: the Invoke API (``POST /2015-03-31/functions/{name}/invocations``).

``boto3.client("lambda", endpoint_url=stack.lambda_url).invoke(...)`` works against it with the
function's logical id, physical name or ARN.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from typing import Any

from devstack import config
from devstack.httpserver import BodyTooLarge, LocalServer, RequestHandler
from devstack.iam import FunctionPolicy, invocation_refusal
from devstack.logs import describe_outcome
from devstack.runtime import FunctionSpec, LambdaRuntime

_INVOKE = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")
_FUNCTION = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/?$")
_LIST = re.compile(r"^/2015-03-31/functions/?$")


def _function_configuration(spec: FunctionSpec) -> dict[str, Any]:
    return {
        "FunctionName": spec.name,
        "FunctionArn": spec.arn,
        "Runtime": spec.runtime,
        "Handler": spec.handler,
        "Timeout": int(spec.timeout),
        "MemorySize": spec.memory_size,
        "Version": "$LATEST",
        "State": "Active",
        "PackageType": "Zip",
    }


class LambdaEndpoint(LocalServer):
    def __init__(self, port: int, runtime: LambdaRuntime | None = None) -> None:
        super().__init__(port, _Handler)
        self.runtime = runtime
        #: The functions' IAM policies by access key id: a function may invoke only what they allow.
        self.policies: dict[str, FunctionPolicy] = {}


class _Handler(RequestHandler):
    server: LambdaEndpoint

    def _error(self, status: int, error_type: str, message: str) -> None:
        body = json.dumps({"Type": "User", "message": message}).encode()
        self.respond(
            status,
            body,
            [("Content-Type", "application/json"), ("x-amzn-ErrorType", f"{error_type}:")],
        )

    def _not_found(self, name: str) -> None:
        arn = name if name.startswith("arn:") else f"arn:aws:lambda:{config.REGION}:{config.ACCOUNT_ID}:function:{name}"
        self._error(404, "ResourceNotFoundException", f"Function not found: {arn}")

    def _lookup(self) -> tuple[str, FunctionSpec | None, dict[str, list[str]]]:
        url = urllib.parse.urlsplit(self.path)
        match = _INVOKE.match(url.path) or _FUNCTION.match(url.path)
        name = urllib.parse.unquote(match.group("name")) if match else ""
        query = urllib.parse.parse_qs(url.query)
        runtime = self.server.runtime
        spec = runtime.find(name) if runtime is not None and name else None
        qualifier = query.get("Qualifier", [""])[0] or None
        if spec is not None and qualifier not in (None, "$LATEST"):
            spec = None
        return name, spec, query

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        runtime = self.server.runtime
        if runtime is None:
            self._error(503, "ServiceException", "the local stack is starting")
            return
        if _LIST.match(path):
            body = {"Functions": [_function_configuration(spec) for spec in runtime.functions.values()]}
            self.respond(200, json.dumps(body).encode(), [("Content-Type", "application/json")])
            return
        if _FUNCTION.match(path):
            name, spec, _ = self._lookup()
            if spec is None:
                self._not_found(name)
                return
            configuration = {"Configuration": _function_configuration(spec)}
            self.respond(200, json.dumps(configuration).encode(), [("Content-Type", "application/json")])
            return
        self._error(404, "UnknownOperationException", f"unknown operation GET {path}")

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if not _INVOKE.match(path):
            self._error(404, "UnknownOperationException", f"unknown operation POST {path}")
            return
        runtime = self.server.runtime
        if runtime is None:
            self._error(503, "ServiceException", "the local stack is starting")
            return
        try:
            payload = self.read_body(config.SYNC_PAYLOAD_LIMIT)
        except BodyTooLarge:
            self._error(
                413,
                "RequestTooLargeException",
                f"Request must be smaller than {config.SYNC_PAYLOAD_LIMIT} bytes for the InvokeFunction operation",
            )
            return
        name, spec, _ = self._lookup()
        if spec is None:
            self._not_found(name)
            return
        refusal = invocation_refusal(self.server.policies, self.headers.get("Authorization") or "", spec.arn)
        if refusal is not None:
            runtime.sink.write("aws", refusal, echo=False)
            self._error(403, "AccessDeniedException", refusal.partition(": ")[2])
            return
        invocation_type = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        if invocation_type not in ("RequestResponse", "Event", "DryRun"):
            self._error(400, "InvalidParameterValueException", f"Unsupported invocation type {invocation_type}")
            return
        if payload.strip():
            try:
                json.loads(payload)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                self._error(400, "InvalidRequestContentException", f"Could not parse request body into json: {error}")
                return
        client_context: Any = None
        raw_context = self.headers.get("X-Amz-Client-Context")
        if raw_context:
            try:
                client_context = json.loads(base64.b64decode(raw_context))
            except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError):
                self._error(400, "InvalidRequestContentException", "Client context must be base64 JSON")
                return
        if invocation_type == "DryRun":
            self.respond(204, b"", [("x-amzn-RequestId", "dry-run")])
            return
        if invocation_type == "Event":
            if len(payload) > config.ASYNC_PAYLOAD_LIMIT:
                self._error(
                    413,
                    "RequestTooLargeException",
                    f"Request must be smaller than {config.ASYNC_PAYLOAD_LIMIT} bytes for the InvokeFunction operation",
                )
                return
            request_id = runtime.invoke_async(spec, payload)
            self.respond(202, b"", [("x-amzn-RequestId", request_id)])
            return
        invoked_arn = name if name.startswith("arn:") else spec.arn
        result = runtime.invoke(spec, payload, client_context=client_context, invoked_arn=invoked_arn)
        runtime.sink.activity(
            f"invoke {spec.logical_id} {describe_outcome(result.ok, result.payload)} {result.duration_ms:.0f} ms"
        )
        headers = [
            ("Content-Type", "application/json"),
            ("x-amzn-RequestId", result.request_id),
            ("X-Amz-Executed-Version", "$LATEST"),
        ]
        if result.function_error:
            headers.append(("X-Amz-Function-Error", result.function_error))
        self.respond(200, result.payload, headers)
