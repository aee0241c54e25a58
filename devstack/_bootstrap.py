"""Execution environment of one local Lambda worker (standard library only).

Started by ``devstack.runtime`` as ``python -P -u _bootstrap.py <requests fd> <responses fd>`` with
the function's environment, its code directory as working directory and ``PYTHONPATH`` = code dir +
layers. It imports the handler once (the init phase), then serves invocations one at a time over a
newline-delimited JSON protocol until the parent closes the request pipe. The function's own
stdout/stderr are the worker's stdout/stderr, which the parent captures as the function's logs.
"""

from __future__ import annotations

import decimal
import importlib
import json
import logging
import os
import resource
import sys
import time
import traceback
from typing import IO, Any


class Identity:
    """context.identity (set only for calls from mobile SDKs; empty here)."""

    cognito_identity_id: str | None = None
    cognito_identity_pool_id: str | None = None


class ClientContext:
    def __init__(self, data: dict[str, Any]) -> None:
        self.client = data.get("client")
        self.custom = data.get("custom")
        self.env = data.get("env")


class LambdaContext:
    """The attributes and methods of the Python runtime's context object."""

    def __init__(self, request_id: str, deadline_ms: int, invoked_function_arn: str, client_context: Any) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = Identity()
        self.client_context = ClientContext(client_context) if isinstance(client_context, dict) else None
        self.tenant_id = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def log(self, message: str) -> None:
        sys.stdout.write(message)
        sys.stdout.flush()

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},log_group_name={self.log_group_name},"
            f"log_stream_name={self.log_stream_name},function_name={self.function_name},"
            f"memory_limit_in_mb={self.memory_limit_in_mb},function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn}])"
        )


_current_request_id = ""


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = _current_request_id
        return True


def _configure_root_logger() -> None:
    """Like the Python runtime: the root logger writes ``[LEVEL]\\ttime\\trequest id\\tmessage``."""
    handler = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    logging.getLogger().addHandler(handler)


def _error(error: BaseException, request_id: str, error_type: str | None = None) -> dict[str, Any]:
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename != __file__]
    return {
        "errorMessage": str(error),
        "errorType": error_type or type(error).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(frames),
    }


def _log_error(payload: dict[str, Any]) -> None:
    print(f"[ERROR] {payload['errorType']}: {payload['errorMessage']}", file=sys.stderr)
    if payload["stackTrace"]:
        print("Traceback (most recent call last):", file=sys.stderr)
        for entry in payload["stackTrace"]:
            sys.stderr.write(entry)
    sys.stderr.flush()


def _decimal(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _load_handler(name: str) -> Any:
    module_name, _, function_name = name.rpartition(".")
    if not module_name:
        raise ValueError(f"Bad handler '{name}': not enough values to unpack (expected 2, got 1)")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as error:
        raise _InitError("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {error}") from error
    except SyntaxError as error:
        raise _InitError("Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {error}") from error
    handler = getattr(module, function_name, None)
    if handler is None:
        raise _InitError("Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'")
    return handler


class _InitError(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _send(channel: IO[bytes], message: dict[str, Any]) -> None:
    channel.write(json.dumps(message, ensure_ascii=False, default=str).encode() + b"\n")
    channel.flush()


def _max_rss_mb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    global _current_request_id
    requests = os.fdopen(int(sys.argv[1]), "rb")
    responses = os.fdopen(int(sys.argv[2]), "wb")
    _configure_root_logger()

    started = time.monotonic()
    try:
        handler = _load_handler(os.environ["_HANDLER"])
    except Exception as error:  # noqa: BLE001 (the init phase failed: report it and end this environment)
        payload = _error(error, "", error.error_type if isinstance(error, _InitError) else None)
        _log_error(payload)
        _send(responses, {"type": "init_error", "error": payload})
        return
    _send(responses, {"type": "ready", "init_ms": (time.monotonic() - started) * 1000})

    for line in iter(requests.readline, b""):
        message = json.loads(line)
        request_id = message["request_id"]
        _current_request_id = request_id
        os.environ["_X_AMZN_TRACE_ID"] = message.get("trace_id", "")
        context = LambdaContext(
            request_id, message["deadline_ms"], message["invoked_function_arn"], message.get("client_context")
        )
        result: dict[str, Any]
        try:
            event = json.loads(message["payload"]) if message["payload"] else {}
            output = handler(event, context)
        except Exception as error:  # noqa: BLE001 (an unhandled function error, reported as Lambda does)
            payload = _error(error, request_id)
            _log_error(payload)
            result = {"type": "result", "ok": False, "error": payload}
        else:
            try:
                body = json.dumps(output, default=_decimal, ensure_ascii=False)
            except (TypeError, ValueError) as error:
                payload = {
                    "errorMessage": f"Unable to marshal response: {error}",
                    "errorType": "Runtime.MarshalError",
                    "requestId": request_id,
                    "stackTrace": [],
                }
                _log_error(payload)
                result = {"type": "result", "ok": False, "error": payload}
            else:
                result = {"type": "result", "ok": True, "payload": body}
        sys.stdout.flush()
        sys.stderr.flush()
        result["max_memory_mb"] = _max_rss_mb()
        _send(responses, result)
        _current_request_id = ""


if __name__ == "__main__":
    main()
