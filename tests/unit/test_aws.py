"""AWS as a dependency: limits sized to the invocation's time, and what counts as AWS being unavailable.

The errors are the SDKs' own classes, wrapped the way pynamodb and the Encryption SDK wrap them.
"""

from __future__ import annotations

import contextvars
import time
import tracemalloc
from typing import Any

import pytest
from aws_encryption_sdk.exceptions import GenerateKeyError
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from pynamodb.exceptions import GetError, PutError, TransactWriteError, VerboseClientError

from oauth_connections.core import aws, budget
from oauth_connections.core.config import Settings
from oauth_connections.core.errors import ServiceUnavailableError
from tests.conftest import Resources

SETTINGS = Settings(connections_table_name="t", aws_timeout_seconds=1.0, aws_max_attempts=2)


class _Context:
    def __init__(self, millis: int) -> None:
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


def _limits_with(millis: int | None) -> aws.CallLimits:
    def run() -> aws.CallLimits:
        if millis is not None:
            budget.start_invocation(_Context(millis))
        return aws.call_limits(SETTINGS)

    return contextvars.Context().run(run)


def test_limits_are_the_settings_when_time_is_plenty() -> None:
    assert _limits_with(None) == aws.CallLimits(connect_timeout=1.0, read_timeout=1.0, max_attempts=2)
    assert _limits_with(25_000) == aws.CallLimits(connect_timeout=1.0, read_timeout=1.0, max_attempts=2)


def test_limits_shrink_so_every_attempt_ends_before_the_deadline() -> None:
    for millis, timeout in ((5_000, 0.5), (3_000, 0.25), (500, 0.25)):
        limits = _limits_with(millis)
        assert limits.connect_timeout == limits.read_timeout == timeout, millis
        assert limits.max_attempts == 2
    worst = 2 * (0.5 + 0.5) + 1
    assert worst <= 5.0 - aws.ANSWER_RESERVE_SECONDS


def client_error(code: str, status: int = 400, operation: str = "GetItem", **extra: Any) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}} | extra
    return ClientError(response, operation)


def wrapped(outer: type[Exception], inner: BaseException) -> Exception:
    """`outer` raised while handling `inner`, as pynamodb and the Encryption SDK do."""
    try:
        try:
            raise inner
        except BaseException as error:
            raise outer(f"failed: {error}") from error
    except Exception as raised:  # noqa: BLE001 - capturing the chained error
        return raised


@pytest.mark.parametrize(
    "error",
    [
        client_error("ThrottlingException", operation="Decrypt"),
        client_error("ProvisionedThroughputExceededException"),
        client_error("RequestLimitExceeded"),
        client_error("ThrottlingException"),
        client_error("InternalServerError", 500),
        client_error("Whatever", 503),
        client_error(
            "TransactionCanceledException",
            operation="TransactWriteItems",
            CancellationReasons=[{"Code": "None"}, {"Code": "ThrottlingError"}],
        ),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
        wrapped(GetError, ReadTimeoutError(endpoint_url="http://127.0.0.1:1")),
        wrapped(PutError, client_error("ProvisionedThroughputExceededException", operation="PutItem")),
        wrapped(GenerateKeyError, client_error("KMSInternalException", 500, operation="GenerateDataKey")),
        ServiceUnavailableError("already classified"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_throttled_or_unreachable_aws_is_unavailable(error: BaseException) -> None:
    assert aws.is_unavailable(error)
    answer = aws.unavailable_error(error)
    assert answer is not None and answer.code == "service_unavailable" and answer.status == 503
    assert answer.retry_after >= 1


def test_pynamodb_verbose_error_keeps_the_5xx_of_its_cause() -> None:
    verbose = wrapped(VerboseClientError, client_error("InternalServerError", 500))
    assert aws.is_unavailable(wrapped(GetError, verbose))


@pytest.mark.parametrize(
    "error",
    [
        client_error("ConditionalCheckFailedException"),
        client_error("ValidationException"),
        client_error("AccessDeniedException", operation="Decrypt"),
        client_error("InvalidCiphertextException", operation="Decrypt"),
        wrapped(PutError, client_error("ConditionalCheckFailedException", operation="PutItem")),
        wrapped(
            TransactWriteError,
            client_error(
                "TransactionCanceledException",
                operation="TransactWriteItems",
                CancellationReasons=[{"Code": "ConditionalCheckFailed"}],
            ),
        ),
        ValueError("not about AWS"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_refusals_and_our_own_errors_are_not_unavailability(error: BaseException) -> None:
    assert not aws.is_unavailable(error)
    assert aws.unavailable_error(error) is None


def test_every_sdk_session_shares_one_copy_of_the_sdk_models(service_env: Resources) -> None:
    """pynamodb makes a botocore session per model's connection; each parsing its own copy of the endpoint
    list and the DynamoDB model (about 8 MB of objects) would cost a function tens of megabytes. Once one
    client has loaded them, every further session (each other model's, and one made for the Encryption
    SDK, here building an S3 client whose model is loaded already) costs well under a megabyte more."""
    from oauth_connections.storage.binding import MODELS, bind_table

    def build(model: Any) -> None:
        model._get_connection().connection.client  # noqa: B018 - building the client loads the models

    try:
        bind_table(f"sdk-models-{time.time_ns()}")  # a table no test binds: every model gets a new connection
        build(MODELS[0])
        aws.client("s3")
        tracemalloc.start()
        for model in MODELS[1:]:
            build(model)
        aws.botocore_session(aws.DEFAULT_LIMITS).create_client("s3")
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        bind_table(service_env.table_name)
    assert held < (len(MODELS) + 1) * 512 * 1024


def test_every_item_model_and_the_transactions_share_one_dynamodb_client(service_env: Resources) -> None:
    """Binding the table gives the six item models one botocore session and one DynamoDB client (pynamodb
    would build one of each per model); a call near the deadline gets the one client of its shorter limits."""
    import botocore.session

    from oauth_connections.storage import table
    from oauth_connections.storage.binding import MODELS, bind_table

    sessions = 0
    original = botocore.session.Session.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal sessions
        sessions += 1
        original(self, *args, **kwargs)

    def clients() -> set[int]:
        return {id(model._get_connection().connection.client) for model in MODELS}

    name = f"one-client-{time.time_ns()}"  # a table no test binds: every model gets a new connection
    try:
        botocore.session.Session.__init__ = counting  # type: ignore[method-assign]
        try:
            bind_table(name)
        finally:
            botocore.session.Session.__init__ = original  # type: ignore[method-assign]
        limits = aws.current_limits()
        assert clients() == {id(table._connection(limits).client)}
        assert sessions <= 1  # the shared connection's own, if no earlier test built it
        with budget.invocation(_Context(2000)):
            bind_table(name)
            shorter = aws.current_limits()
            assert shorter != limits
            assert clients() == {id(table._connection(shorter).client)}
    finally:
        bind_table(service_env.table_name)


def test_an_events_client_follows_the_eventbridge_endpoint_variable(
    service_env: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK reads AWS_ENDPOINT_URL_EVENTBRIDGE for the events client (its service id is EventBridge): a
    client built with it set goes there, and a changed value is a new client, not the one cached before."""
    run = time.time_ns()
    first_url, second_url = f"http://127.0.0.1:9/first-{run}", f"http://127.0.0.1:9/second-{run}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", first_url)
    first = aws.client("events")
    assert first.meta.endpoint_url == first_url
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", second_url)
    second = aws.client("events")
    assert second is not first
    assert second.meta.endpoint_url == second_url
    assert aws.endpoint_variable("events") == "AWS_ENDPOINT_URL_EVENTBRIDGE"


@pytest.mark.parametrize("service", aws.SERVICES)
def test_the_endpoint_variable_of_every_service_used_is_the_one_the_sdk_reads(
    service: str, service_env: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The variable the cache keys on is the one botocore builds the client from: with it set, the client
    goes there and not to the global AWS_ENDPOINT_URL."""
    url = f"http://127.0.0.1:9/{service}-{time.time_ns()}"
    monkeypatch.setenv(aws.endpoint_variable(service), url)
    assert aws.client(service).meta.endpoint_url == url
