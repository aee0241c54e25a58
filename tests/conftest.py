"""Fixtures shared by every test: the embedded AWS (moto in server mode) and in-process API calls."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

REPO = Path(__file__).resolve().parent.parent
EVENTS = REPO / "events"

# Test processes never reach real AWS and log at DEBUG, so log-leak assertions see everything.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_REGION="eu-central-1",
    AWS_DEFAULT_REGION="eu-central-1",
    POWERTOOLS_SERVICE_NAME="oauth-connections",
    POWERTOOLS_LOG_LEVEL="DEBUG",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_METRICS_NAMESPACE="OAuthConnectionsTest",
    # The embedded AWS on a busy machine answers far slower than AWS: a generous per-attempt timeout,
    # so that slowness never turns a successful conditional write into a retry refused by its own condition.
    AWS_TIMEOUT_SECONDS="15",
)
os.environ.pop("AWS_PROFILE", None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """moto in server mode: boto3 and pynamodb talk HTTP to it exactly as to AWS (the local stack's app)."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    from devstack._moto_main import embedded_aws_application

    server = make_server(
        "127.0.0.1", free_port(), embedded_aws_application(), threaded=True, request_handler=MotoRequestHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="embedded-aws", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    os.environ["AWS_ENDPOINT_URL"] = url
    yield url
    server.shutdown()
    thread.join()


@dataclass(frozen=True)
class Resources:
    table_name: str
    key_arn: str
    refresh_queue_url: str = ""
    refresh_dead_letter_queue_url: str = ""
    feeds_bucket: str = ""
    feed_queue_url: str = ""


@pytest.fixture(scope="session")
def resources(aws_endpoint: str) -> Resources:
    """The template's own resources, created by the same provisioner the local stack uses."""
    from devstack.aws import Provisioner
    from devstack.template import load_template, parameter_values

    template = load_template(REPO / "template.yaml")
    fields = {"api_url": "https://api.example.com", "lambda_url": "", "aws_url": aws_endpoint}
    provisioner = Provisioner(
        template,
        parameter_values(template, {}, fields),
        lambda service: boto3.client(service, endpoint_url=aws_endpoint),  # type: ignore[call-overload]
        api_url="https://api.example.com",
        stack_name="unit",
    )
    provisioner.provision()
    return Resources(
        table_name=str(provisioner.attributes["ConnectionsTable"]["Ref"]),
        key_arn=str(provisioner.attributes["EncryptionKey"]["Arn"]),
        refresh_queue_url=str(provisioner.attributes["RefreshQueue"]["Ref"]),
        refresh_dead_letter_queue_url=str(provisioner.attributes["RefreshDeadLetterQueue"]["Ref"]),
        feeds_bucket=str(provisioner.attributes["FeedsBucket"]["Ref"]),
        feed_queue_url=str(provisioner.attributes["FeedFetchQueue"]["Ref"]),
    )


@pytest.fixture
def service_env(resources: Resources, monkeypatch: pytest.MonkeyPatch) -> Iterator[Resources]:
    """The environment a deployed function sees, and fresh settings for each test."""
    from oauth_connections.core.config import get_settings

    monkeypatch.setenv("CONNECTIONS_TABLE_NAME", resources.table_name)
    monkeypatch.setenv("ENCRYPTION_KEY_ARN", resources.key_arn)
    monkeypatch.setenv("REFRESH_QUEUE_URL", resources.refresh_queue_url)
    monkeypatch.setenv("FEEDS_BUCKET_NAME", resources.feeds_bucket)
    monkeypatch.setenv("FEED_QUEUE_URL", resources.feed_queue_url)
    monkeypatch.setenv("TENANT_CLAIM", "tenant_id")
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    monkeypatch.delenv("ALLOW_INSECURE_LOOPBACK_URLS", raising=False)
    monkeypatch.setenv("ALLOWED_RETURN_ORIGINS", "https://app.example.com,http://127.0.0.1:*,http://localhost:*")
    get_settings.cache_clear()
    yield resources
    get_settings.cache_clear()


class LambdaContext:
    function_name = "test-function"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:eu-central-1:123456789012:function:test-function"
    memory_limit_in_mb = 512
    aws_request_id = "test-request"
    log_group_name = "/aws/lambda/test-function"
    log_stream_name = "test"

    def __init__(self, remaining_millis: int = 60_000) -> None:
        """Time left as a deadline from now, as Lambda counts it (the longest function Timeout by default)."""
        self._deadline = time.monotonic() + remaining_millis / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


_HANDLERS: dict[str, Callable[..., Any]] = {}


def load_handler(function_dir: str) -> Callable[..., Any]:
    """Import functions/<dir>/app.py under a unique module name (every function's module is `app`)."""
    if function_dir not in _HANDLERS:
        path = REPO / "functions" / function_dir / "app.py"
        spec = importlib.util.spec_from_file_location(f"function_{function_dir}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _HANDLERS[function_dir] = module.lambda_handler
    return _HANDLERS[function_dir]


def sample_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


@dataclass
class ApiResponse:
    status: int
    headers: dict[str, str]
    text: str
    cookies: list[str]

    def json(self) -> Any:
        return json.loads(self.text)


class InProcessApi:
    """Calls the API functions in-process with API Gateway HTTP API (v2) events built from events/."""

    def __init__(self, tenant: str = "acme") -> None:
        self.tenant = tenant

    def as_tenant(self, tenant: str) -> InProcessApi:
        return InProcessApi(tenant)

    def call(
        self,
        function_dir: str,
        *,
        body: Any = None,
        raw_body: str | None = None,
        connection_id: str | None = None,
        feed_id: str | None = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        claims: dict[str, Any] | None = None,
        cookies: list[str] | None = None,
    ) -> ApiResponse:
        event = copy.deepcopy(sample_event(function_dir))
        if "authorizer" in event["requestContext"]:
            event["requestContext"]["authorizer"]["jwt"]["claims"] = (
                claims if claims is not None else {"sub": "alice", "tenant_id": self.tenant}
            )
        event["cookies"] = cookies or []
        if raw_body is not None:
            event["body"] = raw_body
        elif body is not None:
            event["body"] = json.dumps(body)
        else:
            event.pop("body", None)
        for name, value in (("connection_id", connection_id), ("feed_id", feed_id)):
            if value is not None:
                path = event["rawPath"].replace(event["pathParameters"][name], value)
                event["rawPath"] = event["requestContext"]["http"]["path"] = path
                event["pathParameters"] = {name: value}
        event["queryStringParameters"] = query
        event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in (query or {}).items())
        event["headers"] = {k: v for k, v in event["headers"].items() if k != "if-match"} | (headers or {})
        result = load_handler(function_dir)(event, LambdaContext())
        return ApiResponse(
            result["statusCode"], result.get("headers") or {}, result.get("body") or "", result.get("cookies") or []
        )


@pytest.fixture
def api(service_env: Resources) -> InProcessApi:
    return InProcessApi()


class LogCapture:
    def __init__(self) -> None:
        self.lines: list[str] = []

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def service_logs() -> Iterator[LogCapture]:
    """Every line the service's logger emits during the test, formatted exactly as in CloudWatch."""
    import logging

    from oauth_connections.core.observability import logger

    capture = LogCapture()
    formatter = logger.registered_formatter

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            capture.lines.append(formatter.format(record))

    handler = _Collect(level=logging.DEBUG)
    logger._logger.addHandler(handler)
    try:
        yield capture
    finally:
        logger._logger.removeHandler(handler)


class EventCapture:
    """Every event the service puts on the default bus, read from a queue a catch-all rule feeds."""

    def __init__(self, queue_url: str) -> None:
        self.queue_url = queue_url
        self.seen: list[dict[str, Any]] = []

    def drain(self) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs")
        while True:
            batch = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = batch.get("Messages", [])
            if not messages:
                return self.seen
            for message in messages:
                self.seen.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def of(self, detail_type: str, connection_id: str) -> list[dict[str, Any]]:
        return [
            e for e in self.drain() if e["detail-type"] == detail_type and e["detail"]["connection_id"] == connection_id
        ]


@pytest.fixture(scope="session")
def published_events(aws_endpoint: str) -> EventCapture:
    sqs, events = boto3.client("sqs"), boto3.client("events")
    queue_url = sqs.create_queue(QueueName="captured-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="capture-all", EventPattern=json.dumps({"source": ["oauth-connections"]}))
    events.put_targets(Rule="capture-all", Targets=[{"Id": "queue", "Arn": queue_arn}])
    return EventCapture(queue_url)


@pytest.fixture(scope="module")
def running_endpoint() -> Iterator[Any]:
    """A scripted token endpoint (ScriptedTokenEndpoint) for the module's tests; each test resets it."""
    from tests.support.token_endpoint import ScriptedTokenEndpoint

    with ScriptedTokenEndpoint() as running:
        yield running
