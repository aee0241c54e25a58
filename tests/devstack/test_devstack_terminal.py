"""What `make run` prints: one line per request, scheduled run and queue batch; the full logs in files."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from devstack.config import REPO_ROOT
from devstack.logs import LogSink, describe_outcome
from devstack.tokens import load_or_create_key, mint

FIXTURE_TEMPLATE = REPO_ROOT / "tests" / "fixtures" / "devstack" / "template.yaml"
FUNCTION_LINE = json.dumps({"level": "INFO", "message": "refreshed", "tenant_id": "acme"})
WARNING_LINE = json.dumps({"level": "WARNING", "message": "provider slow", "error_code": "provider_unavailable"})


def test_the_console_gets_activity_and_warnings_the_files_get_everything(tmp_path: Path) -> None:
    console = io.StringIO()
    sink = LogSink(tmp_path, console=console)
    sink.write("RefreshWorkerFunction", FUNCTION_LINE)
    sink.write("RefreshWorkerFunction", WARNING_LINE)
    sink.write("provider", "provider listening on http://127.0.0.1:3002", echo=True)
    sink.activity("GET /connections 200 12 ms")
    sink.close()
    assert console.getvalue().splitlines() == [
        "[RefreshWorkerFunction] WARNING provider slow (provider_unavailable)",
        "[provider] provider listening on http://127.0.0.1:3002",
        "GET /connections 200 12 ms",
    ]
    assert (tmp_path / "RefreshWorkerFunction.log").read_text().splitlines() == [FUNCTION_LINE, WARNING_LINE]
    assert (tmp_path / "activity.log").read_text() == "GET /connections 200 12 ms\n"


def test_all_logs_streams_every_line(tmp_path: Path) -> None:
    console = io.StringIO()
    sink = LogSink(tmp_path, console=console, all_logs=True)
    sink.write("RefreshWorkerFunction", FUNCTION_LINE)
    sink.write("RefreshWorkerFunction", "START RequestId: x", echo=False)
    sink.activity("GET /connections 200 12 ms")
    sink.close()
    assert console.getvalue().splitlines() == [f"[RefreshWorkerFunction] {FUNCTION_LINE}", "GET /connections 200 12 ms"]


@pytest.mark.parametrize(
    ("ok", "payload", "expected"),
    [
        (True, b'{"enqueued": 3, "shards": 4}', "enqueued=3 shards=4"),
        (True, b'{"access_token": "secret-token", "expires_at": "x"}', "ok"),
        (True, b'{"error": {"code": "not_found", "message": "m"}}', "error not_found"),
        (True, b'{"batchItemFailures": [{"itemIdentifier": "a"}]}', "1 item failures"),
        (True, b'{"batchItemFailures": []}', "ok"),
        (False, b'{"errorType": "Sandbox.Timedout", "errorMessage": "m"}', "failed Sandbox.Timedout"),
        (True, b"null", "ok"),
    ],
)
def test_outcomes_in_a_few_words_and_never_a_token(ok: bool, payload: bytes, expected: str) -> None:
    assert describe_outcome(ok, payload) == expected


def _run(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[str], queue.Queue[str], list[str]]:
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "devstack", "run", "--no-provider", "--template", str(FIXTURE_TEMPLATE)),
            *("--state-dir", str(tmp_path), "--schedule-speedup", "30", *flags),
        ],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            **dict.fromkeys(("API_PORT", "LAMBDA_PORT", "AWS_PORT", "RETURN_PORT"), "0"),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in process.stdout or []:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    output: list[str] = []
    _wait_for(lines, output, lambda line: "Ctrl-C" in line)
    return process, lines, output


def _wait_for(lines: queue.Queue[str], output: list[str], found: Callable[[str], bool], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        output.append(line)
        if found(line):
            return line
    pytest.fail("not seen:\n" + "\n".join(output))


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _get_item(tmp_path: Path) -> None:
    info = json.loads((tmp_path / "stack.json").read_text())
    token = mint(
        load_or_create_key(tmp_path),
        issuer=info["issuer"],
        audience=info["audience"],
        subject="alice",
        tenant_claim=info["tenant_claim"],
        tenant_id="acme",
    )
    response = requests.get(
        info["api_url"] + "/items/7?secret=do-not-print", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code == 200


def test_make_run_prints_a_line_per_request_and_per_scheduled_run(tmp_path: Path) -> None:
    process, lines, output = _run(tmp_path)
    try:
        _get_item(tmp_path)
        request = _wait_for(lines, output, lambda line: line.startswith("GET /items/7 "))
        assert re.fullmatch(r"GET /items/7 200 \d+ ms", request), request
        run = _wait_for(lines, output, lambda line: line.startswith("schedule TickFunction"))
        assert re.fullmatch(r"schedule TickFunction \(Tick\) ok \d+ ms", run), run
    finally:
        _stop(process)
    assert not any(line.startswith("[TickFunction]") or line.startswith("{") for line in output), output
    assert "do-not-print" not in "\n".join(output)
    assert any(
        '"detail-type": "Scheduled Event"' in line
        for line in (tmp_path / "logs" / "TickFunction.log").read_text().splitlines()
    )


def test_make_run_with_all_logs_streams_the_functions_lines(tmp_path: Path) -> None:
    process, lines, output = _run(tmp_path, "--all-logs")
    try:
        _wait_for(lines, output, lambda line: line.startswith("[TickFunction] {"))
        _wait_for(lines, output, lambda line: line.startswith("schedule TickFunction (Tick) ok"))
    finally:
        _stop(process)
