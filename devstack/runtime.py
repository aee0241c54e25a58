"""Local Lambda runtime: worker processes that behave like execution environments.

Every function has a pool of workers (``_bootstrap.py`` subprocesses). An invocation takes an idle
worker or, when all are busy, starts a new one (a cold start: import of the handler module) up to
the function's concurrency cap; beyond it, invocations wait for a worker. A worker serves one
invocation at a time and is reused afterwards. The function's Timeout is enforced by killing the
worker (as Lambda resets the environment after a timeout); a handler exception keeps the worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack import config
from devstack.logs import LogSink

BOOTSTRAP = Path(__file__).resolve().parent / "_bootstrap.py"

#: Parent environment variables a worker inherits (everything else comes from the function definition).
PASS_THROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "COVERAGE_PROCESS_START")


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    runtime: str
    timeout: float
    memory_size: int
    environment: Mapping[str, str]
    python_path: tuple[Path, ...]
    log_group_name: str
    max_concurrency: int = config.MAX_WORKERS_PER_FUNCTION
    events: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InvocationResult:
    request_id: str
    payload: bytes
    function_error: str | None = None  # "Unhandled" when the function failed
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.function_error is None

    def json(self) -> Any:
        return json.loads(self.payload) if self.payload else None


def reserved_environment(spec: FunctionSpec) -> dict[str, str]:
    """The variables the Lambda service itself sets in every execution environment."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
        "AWS_LAMBDA_LOG_GROUP_NAME": spec.log_group_name,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
        "LAMBDA_TASK_ROOT": str(spec.code_dir),
        "LAMBDA_RUNTIME_DIR": str(Path(sys.executable).parent),
        "_HANDLER": spec.handler,
        "TZ": "UTC",
        "PYTHONUNBUFFERED": "1",
    }


class WorkerGone(Exception):
    """The worker process ended or broke the protocol."""


class WorkerTimeout(Exception):
    pass


class Worker:
    """One execution environment: a subprocess plus the request/response pipes to it."""

    def __init__(self, spec: FunctionSpec, environment: Mapping[str, str], sink: LogSink, number: int) -> None:
        self.spec = spec
        self.stream_name = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        env = {name: os.environ[name] for name in PASS_THROUGH_ENV if name in os.environ}
        env.update(environment)
        env["AWS_LAMBDA_LOG_STREAM_NAME"] = self.stream_name
        env["PYTHONPATH"] = os.pathsep.join(str(path) for path in spec.python_path)
        request_read, self._request_write = os.pipe()
        self._response_read, response_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-u", str(BOOTSTRAP), str(request_read), str(response_write)],
                cwd=spec.code_dir if spec.code_dir.is_dir() else None,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(request_read, response_write),
                start_new_session=True,  # Ctrl-C in the terminal reaches the stack, which stops workers
            )
        finally:
            os.close(request_read)
            os.close(response_write)
        assert self.process.stdout is not None
        sink.pump(spec.logical_id, self.process.stdout)
        self.number = number
        self.init_ms = 0.0
        self.fresh = True
        self._buffer = b""
        self._lock = threading.Lock()

    # -- protocol
    def _read_message(self, deadline: float | None) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WorkerTimeout
            try:
                ready, _, _ = select.select([self._response_read], [], [], remaining)
                if not ready:
                    raise WorkerTimeout
                chunk = os.read(self._response_read, 1 << 20)
            except (OSError, ValueError) as error:  # the pipe was closed: the stack is stopping
                raise WorkerGone from error
            if not chunk:
                raise WorkerGone
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def wait_ready(self, timeout: float) -> dict[str, Any] | None:
        """None when the handler is imported; else the init error payload (the worker has ended)."""
        message = self._read_message(time.monotonic() + timeout)
        if message.get("type") == "ready":
            self.init_ms = float(message.get("init_ms", 0.0))
            return None
        error: dict[str, Any] = message.get("error") or {}
        return error

    def invoke(self, message: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        data = json.dumps(message, ensure_ascii=False).encode() + b"\n"
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._request_write, view)
                view = view[written:]
        except OSError as error:
            raise WorkerGone from error
        return self._read_message(time.monotonic() + timeout)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_status(self, wait: float = 1.0) -> int | None:
        try:
            return self.process.wait(wait)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL (the whole process group) and release the pipes; for the worker's owner only."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(2.0)
        self.close()

    def signal(self, number: int) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, number)

    def end_input(self) -> None:
        """Close the request pipe: an idle worker sees EOF and exits."""
        with self._lock:
            descriptor, self._request_write = self._request_write, -1
        if descriptor >= 0:
            with contextlib.suppress(OSError):
                os.close(descriptor)

    def close(self) -> None:
        self.end_input()
        with self._lock:
            descriptor, self._response_read = self._response_read, -1
        if descriptor >= 0:
            with contextlib.suppress(OSError):
                os.close(descriptor)


class FunctionPool:
    """The execution environments of one function."""

    def __init__(self, spec: FunctionSpec, environment: Mapping[str, str], sink: LogSink) -> None:
        self.spec = spec
        self.environment = dict(environment)
        self.sink = sink
        self._idle: list[Worker] = []
        self._all: set[Worker] = set()
        self._starting = 0
        self._spawned = 0
        self._condition = threading.Condition()
        self._closed = False

    @property
    def size(self) -> int:
        with self._condition:
            return len(self._all)

    @property
    def closed(self) -> bool:
        return self._closed

    def pids(self) -> list[int]:
        with self._condition:
            return [worker.process.pid for worker in self._all]

    def acquire(self) -> Worker:
        with self._condition:
            while True:
                if self._closed:
                    raise WorkerGone("the stack is stopping")
                while self._idle:
                    worker = self._idle.pop()  # most recently used first, like Lambda
                    if worker.alive:
                        return worker
                    self._discard_locked(worker)
                if len(self._all) + self._starting < self.spec.max_concurrency:
                    self._starting += 1
                    self._spawned += 1
                    number = self._spawned
                    break
                self._condition.wait()
        try:
            worker = Worker(self.spec, self.environment, self.sink, number)
        except BaseException:
            with self._condition:
                self._starting -= 1
                self._condition.notify()
            raise
        with self._condition:
            self._starting -= 1
            self._all.add(worker)
        if self.closed:
            worker.kill()
            raise WorkerGone("the stack is stopping")
        return worker

    def release(self, worker: Worker) -> None:
        with self._condition:
            keep = worker.alive and not self._closed
            if keep:
                self._idle.append(worker)
            else:
                self._discard_locked(worker)
            self._condition.notify()
        if not keep:
            worker.kill()

    def discard(self, worker: Worker) -> None:
        worker.kill()
        with self._condition:
            self._discard_locked(worker)
            self._condition.notify()

    def _discard_locked(self, worker: Worker) -> None:
        self._all.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)

    def close(self) -> tuple[list[Worker], list[Worker]]:
        """Refuse new invocations; (idle workers, busy workers)."""
        with self._condition:
            self._closed = True
            idle = list(self._idle)
            busy = [worker for worker in self._all if worker not in self._idle]
            self._all.clear()
            self._idle.clear()
            self._condition.notify_all()
        return idle, busy


class LambdaRuntime:
    """Invokes the template's functions; shared by the Lambda endpoint, the API and the triggers."""

    def __init__(
        self,
        functions: Mapping[str, FunctionSpec],
        environments: Mapping[str, Mapping[str, str]],
        sink: LogSink,
    ) -> None:
        self.functions = dict(functions)
        self.sink = sink
        self._pools = {
            logical_id: FunctionPool(spec, environments[logical_id], sink)
            for logical_id, spec in self.functions.items()
        }
        self._by_name: dict[str, FunctionSpec] = {}
        for spec in self.functions.values():
            self._by_name[spec.logical_id] = spec
            self._by_name[spec.name] = spec
            self._by_name[spec.arn] = spec
        self._async = ThreadPoolExecutor(max_workers=32, thread_name_prefix="lambda-event")
        self._closed = False

    def find(self, name_or_arn: str) -> FunctionSpec | None:
        """By logical id, function name, ARN, or ARN/partial ARN with a ``$LATEST`` qualifier."""
        spec = self._by_name.get(name_or_arn)
        if spec is None and ":" in name_or_arn:
            parts = name_or_arn.split(":")
            if len(parts) == 8 and parts[7] == "$LATEST":
                spec = self._by_name.get(":".join(parts[:7]))
            elif len(parts) in (3, 7):  # "account:function:name" or a full ARN of an unknown name
                spec = self._by_name.get(parts[-1])
            elif len(parts) == 2 and parts[1] == "$LATEST":
                spec = self._by_name.get(parts[0])
        return spec

    def pool_size(self, logical_id: str) -> int:
        return self._pools[logical_id].size

    def worker_pids(self) -> list[int]:
        return [pid for pool in self._pools.values() for pid in pool.pids()]

    def invoke(
        self,
        spec: FunctionSpec,
        payload: bytes,
        *,
        client_context: Any = None,
        invoked_arn: str | None = None,
        timeout: float | None = None,
    ) -> InvocationResult:
        """Run one invocation synchronously. ``timeout`` (seconds) caps the function's own Timeout."""
        request_id = str(uuid.uuid4())
        pool = self._pools[spec.logical_id]
        started = time.monotonic()
        try:
            worker = pool.acquire()
        except WorkerGone as error:
            return self._error(request_id, "ServiceUnavailable", str(error), started)
        cold = worker.fresh
        log = self.sink.write
        if cold:
            worker.fresh = False
            try:
                init_error = worker.wait_ready(config.INIT_TIMEOUT_SECONDS)
            except (WorkerTimeout, WorkerGone):
                pool.discard(worker)
                return self._error(
                    request_id,
                    "Runtime.ExitError" if not worker.alive else "Sandbox.Timedout",
                    f"RequestId: {request_id} Error: the function's init phase did not complete",
                    started,
                )
            if init_error is not None:
                pool.discard(worker)
                init_error["requestId"] = request_id
                return InvocationResult(request_id, _dumps(init_error), "Unhandled", _elapsed(started))
        function_timeout = spec.timeout if timeout is None else min(spec.timeout, timeout)
        log(spec.logical_id, f"START RequestId: {request_id} Version: $LATEST", echo=False)
        invoke_started = time.monotonic()
        message = {
            "request_id": request_id,
            "deadline_ms": int(time.time() * 1000 + function_timeout * 1000),
            "invoked_function_arn": invoked_arn or spec.arn,
            "client_context": client_context,
            "trace_id": _trace_id(),
            "payload": payload.decode("utf-8"),
        }
        try:
            response = worker.invoke(message, function_timeout)
        except WorkerTimeout:
            pool.discard(worker)
            duration = _elapsed(invoke_started)
            self._report(spec, request_id, duration, None, worker, cold, status="timeout")
            return self._error(
                request_id,
                "Sandbox.Timedout",
                f"RequestId: {request_id} Error: Task timed out after {function_timeout:.2f} seconds",
                started,
            )
        except WorkerGone:
            status = worker.exit_status()
            pool.discard(worker)
            duration = _elapsed(invoke_started)
            self._report(spec, request_id, duration, None, worker, cold, status="error")
            return self._error(
                request_id,
                "Runtime.ExitError",
                f"RequestId: {request_id} Error: Runtime exited with error: exit status {status}",
                started,
            )
        pool.release(worker)
        duration = _elapsed(invoke_started)
        self._report(spec, request_id, duration, response.get("max_memory_mb"), worker, cold)
        if response.get("ok"):
            body = str(response.get("payload", "null")).encode("utf-8")
            if len(body) > config.SYNC_PAYLOAD_LIMIT:
                return self._error(
                    request_id,
                    "Function.ResponseSizeTooLarge",
                    f"Response payload size exceeded maximum allowed payload size ({config.SYNC_PAYLOAD_LIMIT} bytes).",
                    started,
                )
            return InvocationResult(request_id, body, None, duration)
        return InvocationResult(request_id, _dumps(response.get("error") or {}), "Unhandled", duration)

    def invoke_async(
        self,
        spec: FunctionSpec,
        payload: bytes,
        *,
        on_done: Callable[[InvocationResult], None] | None = None,
    ) -> str:
        """``Event`` invocation: queued and run in the background (no retries locally)."""

        def run() -> None:
            result = self.invoke(spec, payload)
            if not result.ok:
                self.sink.write(
                    spec.logical_id,
                    f"[devstack] asynchronous invocation failed: {result.payload.decode(errors='replace')}",
                )
            if on_done is not None:
                on_done(result)

        request_id = str(uuid.uuid4())
        if not self._closed:
            self._async.submit(run)
        return request_id

    def _report(
        self,
        spec: FunctionSpec,
        request_id: str,
        duration_ms: float,
        max_memory_mb: Any,
        worker: Worker,
        cold: bool,
        status: str | None = None,
    ) -> None:
        log = self.sink.write
        log(spec.logical_id, f"END RequestId: {request_id}", echo=False)
        parts = [
            f"REPORT RequestId: {request_id}",
            f"Duration: {duration_ms:.2f} ms",
            f"Billed Duration: {int(duration_ms) + 1} ms",
            f"Memory Size: {spec.memory_size} MB",
            f"Max Memory Used: {max_memory_mb if max_memory_mb is not None else '-'} MB",
        ]
        if cold:
            parts.append(f"Init Duration: {worker.init_ms:.2f} ms")
        if status:
            parts.append(f"Status: {status}")
        log(spec.logical_id, "\t".join(parts), echo=False)

    @staticmethod
    def _error(request_id: str, error_type: str, message: str, started: float) -> InvocationResult:
        body = {"errorMessage": message, "errorType": error_type, "requestId": request_id, "stackTrace": []}
        return InvocationResult(request_id, _dumps(body), "Unhandled", _elapsed(started))

    def close(self, grace: float = 2.0) -> None:
        """End every worker: idle ones at once, busy ones get SIGTERM, then SIGKILL after ``grace``.

        A busy worker's pipes belong to the thread waiting for its answer: that thread sees the
        worker end (EOF) and releases them, so no descriptor is closed under a reader's feet.
        """
        self._closed = True
        self._async.shutdown(wait=False, cancel_futures=True)
        idle: list[Worker] = []
        busy: list[Worker] = []
        for pool in self._pools.values():
            pool_idle, pool_busy = pool.close()
            idle += pool_idle
            busy += pool_busy
        for worker in idle:
            worker.end_input()
        for worker in busy:
            worker.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for worker in idle + busy:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            worker.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(1.0)
        for worker in idle:
            worker.close()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _elapsed(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"
