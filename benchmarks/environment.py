"""What the benchmarks run against: moto in server mode (a process of its own) provisioned from template.yaml, local token
endpoints (one fast, one that answers in 300 ms like a real provider), and the service's functions
in-process (warm) or in fresh interpreters (cold).

The benchmarks reach the domain package (oauth_connections) only through this module, so a change of its
module layout is one edit here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import boto3

REPO = Path(__file__).resolve().parent.parent
FUNCTIONS = REPO / "functions"
AWS_LOG = REPO / ".bench" / "aws.log"
HEAVY_MODULES = ("authlib", "requests", "aws_encryption_sdk", "pynamodb", "pydantic", "boto3")

# Every cold interpreter runs what Lambda gives a function and nothing else: the standard library, the
# function's folder, the shared layer and the dependencies layer (`python -S`, PYTHONPATH set to those). The
# dev virtualenv holds packages the layer has not, which libraries use when they find them (botocore takes
# awscrt and urllib3 pyOpenSSL): each script ends by checking that none of them was reachable.
LAMBDA_CHECK = r"""
import importlib.util as _util, sys
def _not_in_lambda():
    dev_only = ("awscrt", "OpenSSL", "moto", "pytest")
    return [m for m in dev_only if m in sys.modules or _util.find_spec(m) is not None] + [
        p for p in sys.path if "site-packages" in p]
"""
COLD_START_SCRIPT = r"""
import json, socket, sys, time
real = socket.getaddrinfo
def fixed(host, port, *a, **k):  # public DNS is unreachable here; example.com names answer publicly
    if str(host).endswith("example.com"):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", int(port or 0)))]
    return real(host, port, *a, **k)
socket.getaddrinfo = fixed
event_path = sys.argv[1]
started = time.perf_counter()
import app
imported = time.perf_counter()
class Context:
    function_name = "bench"; function_version = "$LATEST"; memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-central-1:123456789012:function:bench"; aws_request_id = "cold"
    def get_remaining_time_in_millis(self): return 10000
app.lambda_handler(json.load(open(event_path)), Context())
done = time.perf_counter()
heavy = [m for m in json.loads(sys.argv[2]) if m in sys.modules]
print(json.dumps({"import_ms": (imported - started) * 1000, "total_ms": (done - started) * 1000, "heavy": heavy,
                  "not_in_lambda": _not_in_lambda()}))
"""

# A naive function's cold init: import boto3, requests, authlib, Powertools and pynamodb, create two clients.
BASELINE_SCRIPT = r"""
import json, sys, time
started = time.perf_counter()
import boto3, requests, pynamodb.models
import authlib.integrations.requests_client
from aws_lambda_powertools import Logger, Metrics, Tracer
logger, metrics, tracer = Logger(), Metrics(), Tracer()
dynamodb, kms = boto3.client("dynamodb"), boto3.client("kms")
print(json.dumps({"total_ms": (time.perf_counter() - started) * 1000, "not_in_lambda": _not_in_lambda()}))
"""
# The least a function of this stack can do at cold init, timed like the baseline: botocore and Powertools'
# logger, metrics and tracer (which imports the X-Ray SDK) with the DynamoDB and KMS clients a retrieval
# needs (GetToken's floor), then with pydantic and pynamodb, then with Powertools' HTTP resolver and one
# route (an API function's floor, one DynamoDB client). What a function costs above its floor is its own.
FLOOR_SCRIPTS = {
    "botocore, Powertools, DynamoDB and KMS clients": r"""
import json, sys, time
started = time.perf_counter()
import botocore.session
from aws_lambda_powertools import Logger, Metrics, Tracer
logger, metrics, tracer = Logger(), Metrics(), Tracer()
session = botocore.session.get_session()
dynamodb, kms = session.create_client("dynamodb"), session.create_client("kms")
print(json.dumps({"total_ms": (time.perf_counter() - started) * 1000, "not_in_lambda": _not_in_lambda()}))
""",
    "the above with pydantic and pynamodb": r"""
import json, sys, time
started = time.perf_counter()
import botocore.session, pydantic, pynamodb.models
from aws_lambda_powertools import Logger, Metrics, Tracer
logger, metrics, tracer = Logger(), Metrics(), Tracer()
session = botocore.session.get_session()
dynamodb, kms = session.create_client("dynamodb"), session.create_client("kms")
class Request(pydantic.BaseModel):
    name: str
Request.model_validate({"name": "floor"})
print(json.dumps({"total_ms": (time.perf_counter() - started) * 1000, "not_in_lambda": _not_in_lambda()}))
""",
    "an API function: pydantic, pynamodb, HTTP resolver, one route, DynamoDB client": r"""
import json, sys, time
started = time.perf_counter()
import botocore.session, pydantic, pynamodb.models
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
logger, metrics, tracer = Logger(), Metrics(), Tracer()
dynamodb = botocore.session.get_session().create_client("dynamodb")
class Item(pydantic.BaseModel):
    name: str
app = APIGatewayHttpResolver(enable_validation=True)
@app.get("/items/<name>")
def get_item(name: str) -> Item:
    return Item(name=name)
event = {"version": "2.0", "routeKey": "GET /items/{name}", "rawPath": "/items/floor", "headers": {},
         "requestContext": {"http": {"method": "GET", "path": "/items/floor"}, "stage": "$default"}}
app.resolve(event, None)
print(json.dumps({"total_ms": (time.perf_counter() - started) * 1000, "not_in_lambda": _not_in_lambda()}))
""",
}
# The layers as `sam build` makes them (layers/*/Makefile: the packages with their bytecode), built by
# `make bench` under .bench/layers, the dependencies for this machine's architecture: the template's are
# arm64, whose binary modules do not load here. Lambda's /var/task and /opt are read-only, so what a
# layer or function folder does not ship as bytecode is compiled again at every cold start. The function
# folders are staged as `sam build` leaves them, sources only (the ClientLayer, for the functions that
# add it, is a layer built like the others); the naive baseline also runs on a sources-only copy of the dependencies, as a layer of
# `BuildMethod: python3.13` is. The cold interpreters write no bytecode.
BENCH_LAYERS = REPO / ".bench" / "layers"
DEPENDENCIES_LAYER = BENCH_LAYERS / "deps" / "python"
SHARED_LAYER = BENCH_LAYERS / "shared" / "python"
CLIENT_LAYER = BENCH_LAYERS / "client" / "python"
STAGED = REPO / ".bench" / "code"
# What the Lambda runtime sets in a function's process, which libraries read at import. Tracing is on, as
# the template's `Tracing: Active` has it: the runtime passes the invocation's trace header and the X-Ray
# daemon's address, and the X-Ray SDK (which Powertools' Tracer imports) takes the invocation's segment and
# samples locally inside Lambda; outside it, it starts a sampler with X-Ray clients of its own at import,
# some 250 ms a cold start in Lambda never spends. The trace segments go to a UDP port nobody reads.
LAMBDA_RUNTIME_ENVIRONMENT = {
    "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
    "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
    "_AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1",
    "_AWS_XRAY_DAEMON_PORT": "2000",
    "_X_AMZN_TRACE_ID": "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=1",
    "TZ": "UTC",
    "PYTHONDONTWRITEBYTECODE": "1",
}
# What the benchmark process sets for itself (or inherits from the tests' environment) and Lambda does not.
NOT_IN_LAMBDA_ENVIRONMENT = ("POWERTOOLS_TRACE_DISABLED", "POWERTOOLS_METRICS_DISABLED", "VIRTUAL_ENV")
PROVIDER_DELAY_SECONDS = 0.3  # a real provider's token endpoint answers in about this time


class Environment:
    def __enter__(self) -> Self:
        import logging

        from devstack.aws import Provisioner
        from devstack.template import load_template, parameter_values
        from tests.conftest import free_port
        from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # The embedded AWS runs in a process of its own, as AWS is to a Lambda: its work does not take the
        # measured process's interpreter lock. Plain moto: the local stack's one-DynamoDB-request-at-a-time
        # and IAM checks guard tests against races and missing permissions; here they would only measure
        # the emulator (the bench's connections never race on one item).
        port = free_port()
        AWS_LOG.parent.mkdir(exist_ok=True)
        self.moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=AWS_LOG.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.aws_url = f"http://127.0.0.1:{port}"
        _wait_listening(port, self.moto)
        os.environ["AWS_ENDPOINT_URL"] = self.aws_url
        template = load_template(REPO / "template.yaml")
        fields = {"api_url": "https://api.example.com", "lambda_url": "", "aws_url": self.aws_url}
        provisioner = Provisioner(
            template,
            parameter_values(template, {}, fields),
            lambda s: boto3.client(s),  # type: ignore[call-overload]
            api_url=fields["api_url"],
            stack_name="bench",
        )
        provisioner.provision()
        mapping = template["Resources"]["RefreshWorkerFunction"]["Properties"]["Events"]["Queue"]["Properties"]
        self.refresh_batch_size = int(mapping["BatchSize"])
        self.refresh_batch_concurrency = int(template["Parameters"]["RefreshBatchConcurrency"]["Default"])
        os.environ["CONNECTIONS_TABLE_NAME"] = str(provisioner.attributes["ConnectionsTable"]["Ref"])
        os.environ["ENCRYPTION_KEY_ARN"] = str(provisioner.attributes["EncryptionKey"]["Arn"])
        os.environ["REFRESH_QUEUE_URL"] = str(provisioner.attributes["RefreshQueue"]["Ref"])
        tokens = {"access_token": "bench-access", "refresh_token": "bench-refresh", "token_type": "bearer"}
        self.endpoint = ScriptedTokenEndpoint().start()
        self.endpoint.default = Scripted(200, tokens | {"expires_in": 3600})
        self.token_endpoint_url = self.endpoint.url
        self.slow_endpoint = ScriptedTokenEndpoint().start()
        # Short-lived tokens, so that `age` makes the same connections due again for a second sweep.
        self.slow_endpoint.default = Scripted(200, tokens | {"expires_in": 120}, delay=PROVIDER_DELAY_SECONDS)
        self.slow_token_endpoint_url = self.slow_endpoint.url
        self.tenant = f"bench-{time.time_ns()}"
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.endpoint.stop()
        self.slow_endpoint.stop()
        self.moto.kill()  # moto's server has nothing to flush
        self.moto.wait(10)

    # ---- warm, in-process
    def _handler(self, function: str) -> Any:
        from tests.conftest import load_handler

        return load_handler(function)

    def connected_connection(
        self,
        *,
        expires_in: int,
        token_url: str = "https://auth.example.com/token",
        allowed_urls: list[str] | None = None,
    ) -> str:
        from oauth_connections.connections import tokens
        from oauth_connections.core.config import get_settings
        from oauth_connections.oauth import token_endpoint
        from tests.conftest import InProcessApi

        api = InProcessApi(self.tenant)
        body: dict[str, object] = {
            "name": f"bench {time.time_ns()}",
            "client_id": "bench-client",
            "client_secret": "bench-secret",
            "authorization_url": "https://auth.example.com/authorize",
            "token_url": token_url,
        }
        if allowed_urls:
            body["allowed_urls"] = allowed_urls
        response = api.call("create_connection", body=body)
        assert response.status == 201, response.text
        connection_id: str = response.json()["id"]
        token_set = token_endpoint.TokenSet(
            "initial-access", "Bearer", "initial-refresh", int(time.time()) + expires_in, ("a",)
        )
        tokens.store_connected(get_settings(), self.tenant, connection_id, token_set)
        return connection_id

    def age(self, connection_id: str) -> None:
        """Time travel: the tokens were obtained an hour ago, and are due as they then would be."""
        from oauth_connections.connections import refresh_schedule
        from oauth_connections.core.config import get_settings
        from oauth_connections.storage.connections import CONNECTIONS, ConnectionRecord

        record = CONNECTIONS.load(self.tenant, connection_id, consistent=True)
        past = datetime.now(UTC) - timedelta(hours=1)
        record.refreshed_at = record.connected_at = past
        due = refresh_schedule.apply_due(get_settings(), record)
        record.update(
            actions=[
                ConnectionRecord.refreshed_at.set(past),
                ConnectionRecord.connected_at.set(past),
                *due,
            ]
        )

    def get_token(self, connection_id: str, *, force: bool = False, aged: bool = False) -> dict[str, Any]:
        from tests.conftest import LambdaContext

        if aged:
            self.age(connection_id)
        event = {"tenant_id": self.tenant, "connection_id": connection_id, "force_refresh": force}
        result: dict[str, Any] = self._handler("get_token")(event, LambdaContext())
        return result

    def raw_get_item(self, connection_id: str) -> Callable[[], Any]:
        """One consistent GetItem of the connection's item with a plain boto3 client: the floor of a retrieval."""
        from oauth_connections.storage.connections import CONNECTIONS

        table = os.environ["CONNECTIONS_TABLE_NAME"]
        pk, sk = CONNECTIONS.key(self.tenant, connection_id)
        client = boto3.client("dynamodb")
        key = {"pk": {"S": pk}, "sk": {"S": sk}}

        def get_item() -> Any:
            item = client.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
            assert item["sk"]["S"] == sk, item
            return item

        return get_item

    def due_connections(self, count: int, *, token_url: str | None = None) -> list[str]:
        """Connections whose tokens expire within the refresh window, so the next sweep queues them."""
        url = token_url or self.token_endpoint_url
        ids = [self.connected_connection(expires_in=120, token_url=url) for _ in range(count)]
        self.age_all(ids)
        return ids

    def forget_data_keys(self) -> None:
        """Drops this process's envelopes and connection keys, as in a worker that starts afresh."""
        from oauth_connections.security import crypto

        crypto._envelope.cache_clear()
        crypto._connection_keys.clear()

    def batch_concurrency(self, limit: int) -> None:
        """How many messages of a batch the refresh worker refreshes at once (RefreshBatchConcurrency)."""
        from oauth_connections.core.config import get_settings

        os.environ["REFRESH_BATCH_CONCURRENCY"] = str(limit)
        get_settings.cache_clear()

    def age_all(self, ids: list[str]) -> None:
        for connection_id in ids:
            self.age(connection_id)

    def sweep(self) -> int:
        from tests.conftest import LambdaContext

        result: dict[str, Any] = self._handler("refresh_scheduler")({}, LambdaContext())
        return int(result["enqueued"])

    def drain_refresh_queue(self, batch_size: int | None = None) -> tuple[int, int]:
        """Deliver the refresh queue to the worker function as its event source mapping would: batches of
        `batch_size` messages (the template's BatchSize by default), each gathered from as many receives
        of at most 10 (SQS's limit) as it takes. A batch is delivered when full or when the queue has no
        more: with a backlog, Lambda's batching window never has to wait."""
        from tests.conftest import LambdaContext

        sqs = boto3.client("sqs")
        queue_url = os.environ["REFRESH_QUEUE_URL"]
        size = batch_size or self.refresh_batch_size
        refreshed = batches = 0
        while True:
            messages: list[Any] = []
            while len(messages) < size:
                received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=min(10, size - len(messages)))
                if not received.get("Messages"):
                    break
                messages += received["Messages"]
            if not messages:
                return refreshed, batches
            event = {
                "Records": [
                    {
                        "messageId": m["MessageId"],
                        "receiptHandle": m["ReceiptHandle"],
                        "body": m["Body"],
                        "attributes": {},
                        "messageAttributes": {},
                        "md5OfBody": m["MD5OfBody"],
                        "eventSource": "aws:sqs",
                        "eventSourceARN": "arn:aws:sqs:eu-central-1:123456789012:bench",
                        "awsRegion": "eu-central-1",
                    }
                    for m in messages
                ]
            }
            result = self._handler("refresh_worker")(event, LambdaContext())
            assert not result["batchItemFailures"], result
            for start in range(0, len(messages), 10):
                chunk = messages[start : start + 10]
                sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
                )
            refreshed += len(messages)
            batches += 1

    # ---- cold, in fresh interpreters
    def functions(self) -> list[str]:
        return sorted(p.name for p in FUNCTIONS.iterdir() if (p / "app.py").is_file())

    def cold_start(self, function: str) -> dict[str, Any]:
        event = REPO / "events" / f"{function}.json"
        code = staged() / "functions" / function
        layers = [DEPENDENCIES_LAYER, *([CLIENT_LAYER] if function in _client_layer_functions() else [])]
        return _cold_run(COLD_START_SCRIPT, function, code, [str(event), json.dumps(HEAVY_MODULES)], layers)

    def cold_baseline(self, *, precompiled: bool = False) -> float:
        """The naive function on the dependencies as sources only, or (`precompiled`) on this stack's layer."""
        layer = DEPENDENCIES_LAYER if precompiled else staged() / "deps-sources"
        code = staged() / "functions"
        return float(_cold_run(BASELINE_SCRIPT, "bench", code, layers=[layer])["total_ms"])

    def cold_floors(self) -> dict[str, float]:
        """Each floor of FLOOR_SCRIPTS, in ms."""
        code = staged() / "functions"
        return {name: float(_cold_run(script, "bench", code)["total_ms"]) for name, script in FLOOR_SCRIPTS.items()}


def lambda_environment(name: str, code: Path) -> dict[str, str]:
    """This process's environment with what the Lambda runtime adds for function `name`, its code in `code`."""
    return os.environ | LAMBDA_RUNTIME_ENVIRONMENT | {"AWS_LAMBDA_FUNCTION_NAME": name, "LAMBDA_TASK_ROOT": str(code)}


def staged() -> Path:
    """The function folders and a sources-only copy of the dependencies layer, once per benchmark process."""
    if not _staged:
        for layer in (DEPENDENCIES_LAYER, SHARED_LAYER, CLIENT_LAYER):
            if not layer.is_dir():
                raise RuntimeError(f"no layer at {layer}: `make bench` builds it")
        shutil.rmtree(STAGED, ignore_errors=True)
        no_bytecode = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(FUNCTIONS, STAGED / "functions", ignore=no_bytecode)
        shutil.copytree(DEPENDENCIES_LAYER, STAGED / "deps-sources", ignore=no_bytecode, copy_function=os.link)
        _staged.append(STAGED)
    return STAGED


_staged: list[Path] = []


@cache
def _client_layer_functions() -> frozenset[str]:
    """The functions (by folder) whose Layers add the ClientLayer."""
    from devstack.template import load_template, resources_of_type

    template = load_template(REPO / "template.yaml")
    return frozenset(
        Path(str(resource["Properties"]["CodeUri"])).name
        for _, resource in resources_of_type(template, "AWS::Serverless::Function")
        if {"Ref": "ClientLayer"} in resource["Properties"].get("Layers", [])
    )


def _cold_run(
    script: str, name: str, code: Path, arguments: list[str] | None = None, layers: list[Path] | None = None
) -> dict[str, Any]:
    """Runs `script` in a fresh interpreter laid out as Lambda lays out function `name`: its code in `code`,
    the shared layer and the dependencies layer (or `layers`), nothing else; its JSON result line."""
    paths = [code, SHARED_LAYER, *(layers or [DEPENDENCIES_LAYER])]
    env = lambda_environment(name, code) | {
        "PYTHONPATH": os.pathsep.join(str(path) for path in paths),
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }
    for variable in NOT_IN_LAMBDA_ENVIRONMENT:
        env.pop(variable, None)
    run = subprocess.run(
        [sys.executable, "-S", "-c", LAMBDA_CHECK + script, *(arguments or [])],
        capture_output=True,
        text=True,
        check=False,
        cwd=code,
        env=env,
    )
    if run.returncode:
        raise RuntimeError(f"the cold interpreter of {name} failed ({run.returncode}):\n{run.stderr[-3000:]}")
    result = dict(json.loads(run.stdout.strip().splitlines()[-1]))
    if result["not_in_lambda"]:
        raise RuntimeError(f"a cold interpreter reached what Lambda does not have: {result['not_in_lambda']}")
    return result


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the embedded AWS exited ({process.returncode}); see {AWS_LOG}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("the embedded AWS did not start listening within 30 s")


def quiet_logger() -> None:
    """The service's logger at WARNING, as the benchmarks measure the code path and not its debug logs."""
    from oauth_connections.core.observability import logger

    logger.setLevel("WARNING")


def import_feed_fetch() -> None:
    """Imports what a feed fetch uses, so that a fetch and its no-fetch baseline load the same modules."""
    from oauth_connections.core.caller import Caller  # noqa: F401
    from oauth_connections.core.config import get_settings  # noqa: F401
    from oauth_connections.feeds import fetch, formats, service  # noqa: F401
    from oauth_connections.feeds.models import FeedCreate  # noqa: F401
    from oauth_connections.security import netguard  # noqa: F401
    from oauth_connections.storage.feeds import latest_runs  # noqa: F401


def fetch_feed_once(url: str, tenant_id: str) -> dict[str, Any]:
    """Registers a public YML feed at `url` and runs `run_feed` once; what the run stored."""
    from oauth_connections.core.caller import Caller
    from oauth_connections.core.config import get_settings
    from oauth_connections.feeds import fetch, service
    from oauth_connections.feeds.models import FeedCreate
    from oauth_connections.storage.feeds import latest_runs

    settings = get_settings()
    feed = service.create_feed(settings, Caller(tenant_id, ""), FeedCreate(name="bench", url=url, format="yml"))
    started = time.perf_counter()
    status = fetch.record_feed_run(settings, tenant_id, feed.id, "manual")
    seconds = time.perf_counter() - started
    [run] = latest_runs(tenant_id, feed.id, 1)
    return {
        "status": status,
        "seconds": seconds,
        "bytes": int(run.bytes or 0),
        "items": run.items,
        "s3_key": run.s3_key,
        "error": run.error_message,
    }
