"""AWS itself as a dependency: how every client is bounded, and what counts as AWS being unavailable.

The SDK defaults (60 s connect and read timeouts, legacy retries) outlast every function here, so a
throttled or unreachable service would make a caller wait for the function's own timeout and learn
nothing. Every client (botocore, pynamodb, the Encryption SDK's KMS client) is built from `call_limits`:
per-attempt connect and read timeouts of AWS_TIMEOUT_SECONDS and the standard retry mode with
AWS_MAX_ATTEMPTS attempts, all shortened so that every attempt ends before the invocation's deadline
(budget.py). A failure that says "AWS is throttled, slow or down" is recognized by `is_unavailable`, in
whatever wrapper botocore, pynamodb or the Encryption SDK put around it, and answered as
`service_unavailable`: nobody's fault, worth a retry shortly, never a provider failure.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oauth_connections.core import budget
from oauth_connections.core.errors import ServiceUnavailableError

if TYPE_CHECKING:
    import botocore.config
    import botocore.loaders
    import botocore.session

    from oauth_connections.core.config import Settings

# The AWS services the service calls. Their SDK models are shipped beside this module (sdk_models_build.py,
# `make sdk-models`) and every client reads them from there: a client of any other service is unknown.
SERVICES = ("dynamodb", "events", "kms", "s3", "sqs")
SDK_MODELS = Path(__file__).resolve().parent / "sdk_models"

# Time kept back at the end of an invocation to answer after the last attempt gave up.
ANSWER_RESERVE_SECONDS = 0.5
_SHORTEST_TIMEOUT_SECONDS = 0.25

# Error codes (from any AWS service) that mean "too many requests" or "the service failed", not "you are wrong".
UNAVAILABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "InternalServerError",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "KMSInternalException",
        "KeyUnavailableException",
        "DependencyTimeoutException",
    }
)
# The reasons DynamoDB gives per item when it cancels a transaction because it was throttled.
_CANCELLATION_CODES = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded"})


@dataclass(frozen=True)
class CallLimits:
    connect_timeout: float
    read_timeout: float
    max_attempts: int


def _default_limits() -> CallLimits:
    from oauth_connections.core.config import Settings

    fields = Settings.model_fields
    timeout = float(fields["aws_timeout_seconds"].default)
    return CallLimits(
        connect_timeout=timeout, read_timeout=timeout, max_attempts=int(fields["aws_max_attempts"].default)
    )


# The limits of the settings' defaults, for code that runs without configuration.
DEFAULT_LIMITS = _default_limits()


def call_limits(settings: Settings) -> CallLimits:
    """Per-attempt timeouts and attempts such that all attempts of one call end before the deadline.

    One attempt may wait for both the connection and the answer, and the standard mode waits up to a
    second between attempts. Near the deadline the timeout is halved until the call fits (down to a
    floor): a few fixed values, so the clients built for them are reused, not rebuilt per call.
    """
    attempts = settings.aws_max_attempts
    timeout = settings.aws_timeout_seconds
    left = budget.remaining_seconds()
    if left is not None:
        available = left - ANSWER_RESERVE_SECONDS - (attempts - 1)
        while timeout > _SHORTEST_TIMEOUT_SECONDS and 2 * attempts * timeout > available:
            timeout = max(_SHORTEST_TIMEOUT_SECONDS, timeout / 2)
    return CallLimits(connect_timeout=timeout, read_timeout=timeout, max_attempts=attempts)


def client_config(limits: CallLimits) -> botocore.config.Config:
    """The botocore configuration of every AWS client of the service."""
    return _config(limits.connect_timeout, limits.read_timeout, limits.max_attempts)


@cache
def _config(connect_timeout: float, read_timeout: float, max_attempts: int) -> botocore.config.Config:
    import botocore.config

    return botocore.config.Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
    )


def current_limits() -> CallLimits:
    """The limits of a call made now, from this environment's settings."""
    from oauth_connections.core.config import get_settings

    return call_limits(get_settings())


def client(service: str, limits: CallLimits | None = None) -> Any:
    """A client of `service`, bounded by the settings and the invocation's remaining time (or `limits`)."""
    return _client(service, limits or current_limits())


def _client(service: str, limits: CallLimits) -> Any:
    """The one client of `service` with these limits, built on first use. botocore's client, as boto3's
    client() would return it: boto3 adds only the resource layer and S3's managed transfers, which nothing
    here uses, and importing it would cost a cold start some 20 ms. A session must not build clients in two
    threads at once, and a sweep's shard readers may ask for the same one together: one builds it. A client
    is for the endpoint it was built with: the endpoint settings of the environment are part of its key."""
    key = (service, limits, os.environ.get(endpoint_variable(service)), os.environ.get("AWS_ENDPOINT_URL"))
    found = _clients.get(key)
    if found is None:
        with _building:
            found = _clients.get(key)
            if found is None:
                create: Any = _clients_session().create_client  # typed per literal service name; ours is a str
                found = _clients[key] = create(service, config=client_config(limits))
    return found


_clients: dict[tuple[str, CallLimits, str | None, str | None], Any] = {}
_building = threading.Lock()


@cache
def endpoint_variable(service: str) -> str:
    """The SDK's endpoint variable of one service, named as botocore names it: AWS_ENDPOINT_URL_ and the
    service id upper-cased, spaces and hyphens as underscores. botocore takes the id from the client name
    without loading the service's model: most names are their hyphenated id, its table has the others
    (events is EventBridge, so AWS_ENDPOINT_URL_EVENTBRIDGE)."""
    from botocore import utils

    name = utils.SERVICE_NAME_ALIASES.get(service, service)
    service_id = utils.CLIENT_NAME_TO_HYPHENIZED_SERVICE_ID_OVERRIDES.get(name, name)
    return f"AWS_ENDPOINT_URL_{service_id.replace('-', '_').upper()}"


@cache
def _clients_session() -> botocore.session.Session:
    import botocore.session

    return share_sdk_models(botocore.session.get_session())


def botocore_session(limits: CallLimits) -> botocore.session.Session:
    """A botocore session whose clients (the Encryption SDK's KMS client) carry the same limits.

    It reads botocore's service descriptions (endpoints, API models, rule sets) through the process's one
    loader, which has them cached: a client of a fresh session spends some 35 ms of a cold start finding
    and parsing them again. The loader only reads files and caches what it parsed."""
    import botocore.session

    session = share_sdk_models(botocore.session.get_session())
    session.set_default_client_config(client_config(limits))
    return session


def share_sdk_models(session: botocore.session.Session) -> botocore.session.Session:
    """Gives `session` the process's one loader of the SDK's JSON models (endpoints, partitions, each
    service's API). Every botocore session would parse its own copies otherwise, and pynamodb makes a
    session per connection: a few sessions held over 30 MB of identical model objects."""
    session.register_component("data_loader", _sdk_models())
    return session


@cache
def _sdk_models() -> botocore.loaders.Loader:
    """The loader of the shipped SDK models (SDK_MODELS), which botocore is to take for its own data: it
    resolves endpoints with the services' rule sets only when endpoints.json is its built-in one."""
    import botocore.loaders

    class ShippedModels(botocore.loaders.Loader):
        def is_builtin_path(self, path: str) -> bool:
            return Path(path).is_relative_to(SDK_MODELS)

    return ShippedModels(extra_search_paths=[str(SDK_MODELS)], include_default_search_paths=False)


def is_unavailable(error: BaseException) -> bool:
    """True if `error`, or anything it wraps, says an AWS dependency is throttled, timed out, refused or failed."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotocoreConnectionError

    for link in _chain(error):
        if isinstance(link, ServiceUnavailableError | BotocoreConnectionError | HTTPClientError):
            return True
        if isinstance(link, ClientError):
            code = str(link.response.get("Error", {}).get("Code", ""))
            status = int(link.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            reasons = {str(r.get("Code")) for r in link.response.get("CancellationReasons") or [] if r}
            if code in UNAVAILABLE_CODES or status >= 500 or reasons & _CANCELLATION_CODES:
                return True
        cancelled = getattr(link, "cancellation_reasons", None) or []
        if {getattr(reason, "code", None) for reason in cancelled if reason} & _CANCELLATION_CODES:
            return True
    return False


def unavailable_error(error: BaseException) -> ServiceUnavailableError | None:
    """The service_unavailable error to answer for `error`, or None if it is not about AWS being unavailable."""
    if isinstance(error, ServiceUnavailableError):
        return error
    if is_unavailable(error):
        return ServiceUnavailableError("a storage or key service is unavailable; try again shortly")
    return None


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps: `raise ... from`, an error raised while handling another, pynamodb's cause."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        cause = getattr(link, "cause", None)
        link = link.__cause__ or (cause if isinstance(cause, BaseException) else None) or link.__context__
