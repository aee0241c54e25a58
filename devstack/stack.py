"""The local stack: embedded AWS + provisioning + Lambda runtime + Lambda endpoint + API gateway + triggers."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import boto3

from devstack import config
from devstack.apigw import ApiGateway, Route, build_routes
from devstack.aws import MotoServer, Provisioner, client_config
from devstack.console import CONSOLE_DIR_NAME, ConsoleServer
from devstack.functions import build_functions
from devstack.iam import DENIAL_PREFIX, enforce_policies, function_policies, policy_document
from devstack.lambda_api import LambdaEndpoint
from devstack.logs import LogSink
from devstack.provider import DemoProvider, provider_available
from devstack.return_page import ReturnPage
from devstack.runtime import FunctionSpec, InvocationResult, LambdaRuntime
from devstack.stack_info import STACK_FILE, running_stack_info
from devstack.template import load_template, parameter_values
from devstack.tokens import SigningKey, load_or_create_key, mint, scope_claim
from devstack.triggers import (
    Schedule,
    Scheduler,
    SqsPoller,
    queue_sources_of,
    schedules_of,
)


class StackError(Exception):
    """The local stack cannot start."""


class FunctionError(Exception):
    """A local invocation ended with a function error; ``error`` is Lambda's error payload."""

    def __init__(self, error: Mapping[str, Any]) -> None:
        super().__init__(f"{error.get('errorType')}: {error.get('errorMessage')}")
        self.error = dict(error)


class Stack:
    """The whole local stack of a SAM template, in this process and a few subprocesses.

    Ports of 0 pick free ports. ``schedules=False`` keeps schedules from firing (deterministic
    tests; ``fire_schedule`` still runs one on demand); ``schedule_speedup`` makes their clock run
    faster (60: ``rate(1 minute)`` fires every second). ``iam`` holds each function to its template
    policy on the embedded AWS (``devstack.iam``); ``iam=False`` lets functions do anything there.
    """

    def __init__(
        self,
        template_path: Path | str = config.DEFAULT_TEMPLATE,
        repo_root: Path | str = config.REPO_ROOT,
        state_dir: Path | str | None = None,
        *,
        api_port: int = 0,
        lambda_port: int = 0,
        aws_port: int = 0,
        console_port: int = 0,
        parameter_overrides: Mapping[str, Any] | None = None,
        env_overrides: Mapping[str, str] | None = None,
        function_env_overrides: Mapping[str, Mapping[str, str]] | None = None,
        schedules: bool = False,
        schedule_speedup: float = 1.0,
        with_provider: bool = False,
        provider_port: int = config.DEFAULT_PROVIDER_PORT,
        return_page: bool = False,
        return_port: int = config.DEFAULT_RETURN_PORT,
        echo_logs: bool = True,
        all_logs: bool = False,
        stack_name: str = config.STACK_NAME,
        iam: bool = True,
    ) -> None:
        self.template_path = Path(template_path).resolve()
        self.repo_root = Path(repo_root).resolve()
        self.state_dir = Path(state_dir).resolve() if state_dir else config.default_state_dir(self.repo_root, api_port)
        self.ports = {"api": api_port, "lambda": lambda_port, "aws": aws_port, "console": console_port}
        self.parameter_overrides = dict(parameter_overrides or {})
        self.env_overrides = dict(env_overrides or {})
        self.function_env_overrides = {key: dict(value) for key, value in (function_env_overrides or {}).items()}
        self.schedules_enabled = schedules
        self.schedule_speedup = schedule_speedup
        self.with_provider = with_provider
        self.provider_port = provider_port
        self.with_return_page = return_page
        self.return_port = return_port
        self.echo_logs = echo_logs
        self.all_logs = all_logs
        self.stack_name = stack_name
        self.iam_enabled = iam

        self.api_url = self.lambda_url = self.aws_url = self.console_url = ""
        self.provider_url: str | None = None
        self.return_url: str | None = None
        self.parameters: dict[str, Any] = {}
        self.physical_ids: dict[str, str] = {}
        self.attributes: dict[str, dict[str, Any]] = {}
        self.functions: dict[str, FunctionSpec] = {}
        self.routes: list[Route] = []
        self.schedules: list[Schedule] = []
        self.warnings: list[str] = []
        self.signing_key: SigningKey | None = None
        self.template: dict[str, Any] = {}

        self._sink: LogSink | None = None
        self._moto: MotoServer | None = None
        self._api: ApiGateway | None = None
        self._lambda: LambdaEndpoint | None = None
        self._console: ConsoleServer | None = None
        self._runtime: LambdaRuntime | None = None
        self._scheduler: Scheduler | None = None
        self._pollers: list[SqsPoller] = []
        self._provider: DemoProvider | None = None
        self._return_page: ReturnPage | None = None
        self._session = boto3.session.Session()
        self._session_lock = threading.Lock()
        self._capture_url = ""
        self._captured: list[dict[str, Any]] = []
        self._capture_lock = threading.Lock()
        self._started = False
        self._lock: StateLock | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        if self._started:
            return self
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = StateLock.acquire(self.state_dir)
        sink = self._sink = LogSink(self.state_dir / "logs", echo=self.echo_logs, all_logs=self.all_logs)
        self._moto = MotoServer(self.ports["aws"], sink)  # starts in the background while we go on
        self.template = load_template(self.template_path)
        self.signing_key = load_or_create_key(self.state_dir)
        self._api = _bind(ApiGateway, self.ports["api"], "API_PORT")
        self._lambda = _bind(LambdaEndpoint, self.ports["lambda"], "LAMBDA_PORT")
        if self.with_return_page:
            self._return_page = _bind(ReturnPage, self.return_port, "RETURN_PORT")
        self._console = _bind(ConsoleServer, self.ports["console"], "CONSOLE_PORT")
        self.api_url, self.lambda_url, self.console_url = self._api.url, self._lambda.url, self._console.url
        self._moto.wait_ready()
        self.aws_url = self._moto.url

        fields = {
            "api_url": self.api_url,
            "lambda_url": self.lambda_url,
            "aws_url": self.aws_url,
            "console_url": self.console_url,
        }
        self.parameters = parameter_values(self.template, self.parameter_overrides, fields)
        provisioner = Provisioner(
            self.template, self.parameters, self.boto3_client, api_url=self.api_url, stack_name=self.stack_name
        )
        provisioner.provision()
        self._capture_url = provisioner.create_event_capture()
        self.attributes = provisioner.attributes
        self.physical_ids = {logical_id: str(values["Ref"]) for logical_id, values in self.attributes.items()}

        self.functions = build_functions(
            self.template,
            provisioner,
            template_dir=self.template_path.parent,
            state_dir=self.state_dir,
            fields=fields,
            env_overrides=self.env_overrides,
            function_env_overrides=self.function_env_overrides,
            warnings=self.warnings,
        )
        if self.iam_enabled:
            document = policy_document(self.template, provisioner, self.functions, self.warnings)
            enforce_policies(self.aws_url, document)
            self._lambda.policies = function_policies(document)
        runtime = self._runtime = LambdaRuntime(
            self.functions, {key: spec.environment for key, spec in self.functions.items()}, sink
        )
        self.routes = build_routes(self.template, provisioner.resolver, self.functions)
        self._api.configure(self.routes, runtime, [self.signing_key], sink)
        self._lambda.runtime = runtime
        self._api.start("api-gateway")
        self._lambda.start("lambda-endpoint")
        if self._return_page is not None:
            self._return_page.start("return-page")
            self.return_url = self._return_page.page_url
        console_settings = {
            "manage_scope": self.parameters.get("ManageScope"),
            "tenant_claim": self.tenant_claim,
            "redirect_uri": f"{self.api_url}/oauth2/callback",
        }
        self._console.configure(self.repo_root / CONSOLE_DIR_NAME, self.api_url, console_settings, self._console_token)
        self._console.start("console")

        queue_urls = {
            str(values["Arn"]): str(values["QueueUrl"]) for values in self.attributes.values() if "QueueUrl" in values
        }
        for spec in self.functions.values():
            self.schedules.extend(schedules_of(spec, provisioner.resolver, self.stack_name))
            for source in queue_sources_of(spec, provisioner.resolver):
                url = queue_urls.get(source.queue_arn)
                if url is None:
                    self.warnings.append(f"{spec.logical_id}: queue {source.queue_arn} is not in the template")
                    continue
                poller = SqsPoller(source, url, runtime, lambda: self.boto3_client("sqs"), sink)
                self._pollers.append(poller)
                poller.start()
        if self.schedules_enabled:
            self._scheduler = Scheduler(self.schedules, runtime, sink, self.schedule_speedup)
            self._scheduler.start()

        if self.with_provider:
            if provider_available(self.repo_root):
                self._provider = DemoProvider(self.repo_root, self.state_dir, self.provider_port, self._api.port, sink)
                self.provider_url = self._provider.url
            else:
                self.warnings.append("demo provider not started: provider/server.mjs, node_modules or node missing")
        self._write_stack_file()

    def stop(self) -> None:
        """Stop everything this stack started (idempotent)."""
        if self._scheduler is not None:
            self._scheduler.stop()
        for poller in self._pollers:
            poller.stop()
        for server in (self._api, self._lambda, self._return_page, self._console):
            if server is not None:
                with contextlib.suppress(OSError):
                    server.stop()
        if self._runtime is not None:
            self._runtime.close()
        if self._provider is not None:
            self._provider.stop()
        if self._moto is not None:
            self._moto.stop()
        if self._sink is not None:
            self._sink.close()
        with contextlib.suppress(FileNotFoundError):
            if self._owns_stack_file():
                (self.state_dir / STACK_FILE).unlink()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._scheduler = None
        self._pollers = []
        self._api = self._lambda = self._console = None
        self._return_page = None
        self._runtime = None
        self._provider = None
        self._moto = None
        self._started = False

    @property
    def running(self) -> bool:
        return self._started and self._runtime is not None

    # ------------------------------------------------------------------ tokens
    @property
    def issuer(self) -> str:
        return str(self.parameters.get("JwtIssuer", ""))

    @property
    def audience(self) -> list[str]:
        value = self.parameters.get("JwtAudience", [])
        return list(value) if isinstance(value, list) else [str(value)]

    @property
    def tenant_claim(self) -> str:
        return str(self.parameters.get("TenantClaim", "tenant_id"))

    @property
    def route_scopes(self) -> list[str]:
        """Every scope some route requires: a token carrying them all may call every route."""
        return sorted({scope for route in self.routes for scope in route.scopes})

    def mint_token(
        self,
        tenant_id: str,
        user: str = "dev-user",
        *,
        claims: Mapping[str, Any] | None = None,
        expires_in: int = 3600,
        audience: str | list[str] | None = None,
        issuer: str | None = None,
        key: SigningKey | None = None,
    ) -> str:
        """A bearer token the local API accepts (unless the arguments make it invalid on purpose).
        It carries every route scope (``route_scopes``) in its ``scope`` claim, if there are any.
        ``claims`` are added last; a claim given as None is removed (``scope=None``: no scopes)."""
        signing_key = key or self.signing_key
        if signing_key is None:
            signing_key = self.signing_key = load_or_create_key(self.state_dir)
        return mint(
            signing_key,
            issuer=issuer if issuer is not None else self.issuer,
            audience=audience if audience is not None else self.audience,
            subject=user,
            tenant_claim=self.tenant_claim,
            tenant_id=tenant_id,
            expires_in=expires_in,
            claims=scope_claim(self.route_scopes) | dict(claims or {}),
        )

    def _console_token(self, tenant_id: str, user: str, read_only: bool) -> str:
        """The console's local sign-in: the read scope only, or every route scope."""
        scopes = [str(self.parameters.get("ReadScope", ""))] if read_only else self.route_scopes
        return self.mint_token(tenant_id, user, claims=scope_claim([scope for scope in scopes if scope]))

    # ------------------------------------------------------------------ observation
    def function_logs(self, function: str | None = None) -> list[str]:
        """Every captured output line of the functions (or of one, by logical id)."""
        if self._sink is None:
            sink_dir = self.state_dir / "logs"
            names = [function] if function else sorted(self.functions)
            return [
                line
                for name in names
                if (sink_dir / f"{name}.log").exists()
                for line in (sink_dir / f"{name}.log").read_text(encoding="utf-8").splitlines()
            ]
        return self._sink.lines([function] if function else sorted(self.functions))

    def iam_denials(self) -> list[str]:
        """Every request of a function the embedded AWS refused under its template policy (cumulative)."""
        return [line for line in self._require_sink().lines(["aws"]) if line.startswith(DENIAL_PREFIX)]

    def _require_sink(self) -> LogSink:
        if self._sink is None:
            raise RuntimeError("the stack is not running")
        return self._sink

    def published_events(self) -> list[dict[str, Any]]:
        """Every event put on the default bus or a template bus since start (cumulative)."""
        sqs = self.boto3_client("sqs")
        with self._capture_lock:
            while True:
                response = sqs.receive_message(QueueUrl=self._capture_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
                messages = response.get("Messages") or []
                if not messages:
                    break
                for message in messages:
                    event = json.loads(message["Body"])
                    event.setdefault("account", config.ACCOUNT_ID)  # EventBridge always sets it
                    self._captured.append(event)
                sqs.delete_message_batch(
                    QueueUrl=self._capture_url,
                    Entries=[
                        {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                        for index, message in enumerate(messages)
                    ],
                )
            return list(self._captured)

    # ------------------------------------------------------------------ clients and invocation
    def boto3_client(self, service: str) -> Any:
        """A boto3 client for the embedded AWS (``lambda``: the local Lambda endpoint)."""
        endpoint = self.lambda_url if service == "lambda" else self.aws_url
        with self._session_lock:
            return self._session.client(
                service,  # type: ignore[call-overload]
                endpoint_url=endpoint,
                region_name=config.REGION,
                aws_access_key_id=config.FAKE_ACCESS_KEY,
                aws_secret_access_key=config.FAKE_SECRET_KEY,
                config=client_config(),
            )

    def lambda_client(self) -> Any:
        return self.boto3_client("lambda")

    def invoke(self, function: str, event: Any = None, *, check: bool = True) -> Any:
        """Invoke a function (logical id, name or ARN) in-process; its decoded result.
        With ``check``, a function error raises FunctionError."""
        result = self.invoke_raw(function, event)
        if check and not result.ok:
            raise FunctionError(result.json() or {})
        return result.json()

    def invoke_raw(self, function: str, event: Any = None) -> InvocationResult:
        runtime = self._require_runtime()
        spec = runtime.find(function)
        if spec is None:
            raise KeyError(f"no function {function} in {self.template_path.name}")
        return runtime.invoke(spec, json.dumps({} if event is None else event).encode())

    def fire_schedule(self, function: str, event_name: str | None = None) -> Any:
        """Run one of a function's schedules now, synchronously (works with schedules off)."""
        runtime = self._require_runtime()
        spec = runtime.find(function)
        candidates = [
            schedule
            for schedule in self.schedules
            if spec is not None and schedule.function == spec.logical_id and event_name in (None, schedule.event_name)
        ]
        if not candidates:
            raise KeyError(f"{function} has no schedule {event_name or ''}".strip())
        from datetime import UTC, datetime

        return self.invoke(candidates[0].function, candidates[0].event(datetime.now(UTC)))

    def worker_count(self, function: str) -> int:
        """How many execution environments a function has now."""
        runtime = self._require_runtime()
        spec = runtime.find(function)
        if spec is None:
            raise KeyError(function)
        return runtime.pool_size(spec.logical_id)

    def child_pids(self) -> list[int]:
        """Processes this stack runs now: the embedded AWS, the demo provider, the function workers."""
        pids = [process.process.pid for process in (self._moto, self._provider) if process is not None]
        return pids + (self._runtime.worker_pids() if self._runtime is not None else [])

    def schedule_firings(self) -> dict[tuple[str, str], int]:
        return dict(self._scheduler.fired) if self._scheduler is not None else {}

    def _require_runtime(self) -> LambdaRuntime:
        if self._runtime is None:
            raise RuntimeError("the stack is not running")
        return self._runtime

    # ------------------------------------------------------------------ state file
    def _write_stack_file(self) -> None:
        info = {
            "pid": os.getpid(),
            "template": str(self.template_path),
            "api_url": self.api_url,
            "lambda_url": self.lambda_url,
            "aws_url": self.aws_url,
            "provider_url": self.provider_url,
            "return_url": self.return_url,
            "console_url": self.console_url,
            "issuer": self.issuer,
            "audience": self.audience,
            "tenant_claim": self.tenant_claim,
            "scopes": self.route_scopes,
            "started_at": time.time(),
        }
        path = self.state_dir / STACK_FILE
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(info, indent=2), encoding="utf-8")
        temporary.replace(path)

    def _owns_stack_file(self) -> bool:
        try:
            info = json.loads((self.state_dir / STACK_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return bool(info.get("pid") == os.getpid() and info.get("api_url") == self.api_url)


class StateLock:
    """One running stack per state folder: a second one would delete the first one's logs while it
    writes them and rewrite its provider configuration. The lock is an flock, so a stack that died
    without stopping leaves nothing to clean up."""

    FILE_NAME = "stack.lock"

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        handle = (state_dir / cls.FILE_NAME).open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            info = running_stack_info(state_dir) or {}
            running = f" (pid {info['pid']}, API {info['api_url']})" if info.get("api_url") else ""
            raise StackError(
                f"another local stack{running} is running with the state folder {state_dir}; stop it first, "
                f"or give this one other ports (API_PORT, LAMBDA_PORT, AWS_PORT, PROVIDER_PORT, RETURN_PORT): "
                f"a moved API_PORT keeps its state in {config.STATE_DIR_NAME}/api-<port>/"
            ) from None
        return cls(handle)

    def release(self) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


def _bind[T: (ApiGateway, LambdaEndpoint, ReturnPage, ConsoleServer)](kind: type[T], port: int, variable: str) -> T:
    try:
        return kind(port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise StackError(
                f"port {port} is already in use (is another local stack running? set {variable})"
            ) from error
        raise
