"""``python -m devstack token`` / ``run`` and clean shutdown (no processes left behind)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jwt
import pytest

from devstack import Stack
from devstack.config import REPO_ROOT
from devstack.provider import provider_available
from tests.support.stack_fixtures import ApiClient

FIXTURE_TEMPLATE = REPO_ROOT / "tests" / "fixtures" / "devstack" / "template.yaml"


def _devstack(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", *arguments],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, int(port))) == 0


def test_token_cli_prints_only_a_token_the_api_accepts(fixture_stack: Stack, fixture_api: ApiClient) -> None:
    result = _devstack(
        "token",
        "--tenant",
        "acme",
        "--user",
        "alice",
        "--state-dir",
        str(fixture_stack.state_dir),
        "--template",
        str(FIXTURE_TEMPLATE),
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", result.stdout), repr(result.stdout)
    assert jwt.get_unverified_header(result.stdout)["alg"] == "RS256"
    response = fixture_api.with_token(result.stdout).get("/items/1")
    assert response.status_code == 200, response.text
    claims = response.json()["event"]["requestContext"]["authorizer"]["jwt"]["claims"]
    assert claims["tenant_id"] == "acme"
    assert claims["sub"] == "alice"


def test_token_cli_without_a_running_stack(tmp_path: Path) -> None:
    result = _devstack("token", "--tenant", "globex", "--state-dir", str(tmp_path), env={"API_PORT": "3999"})
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout, options={"verify_signature": False})
    assert claims["iss"] == "http://127.0.0.1:3999/local-issuer"
    assert claims["aud"] == "oauth-connections-local"
    assert claims["tenant_id"] == "globex"
    assert claims["sub"] == "dev-user"
    assert (tmp_path / "jwt-signing-key.pem").stat().st_mode & 0o077 == 0


def test_stop_leaves_no_processes(tmp_path: Path) -> None:
    stack = Stack(template_path=FIXTURE_TEMPLATE, state_dir=tmp_path, echo_logs=False)
    with stack:
        stack.invoke("EchoFunction", {})
        stack.lambda_client().invoke(
            FunctionName="SleepFunction", InvocationType="Event", Payload=json.dumps({"seconds": 1.5}).encode()
        )
        time.sleep(0.5)  # the Event invocation is running when the stack stops
        started = stack.child_pids()
        assert len(started) == 3  # the embedded AWS, an idle worker and a busy one
        assert all(_alive(pid) for pid in started)
        api_url, aws_url = stack.api_url, stack.aws_url
        assert _port_open(api_url)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5  # a busy worker gets SIGTERM; nothing waits for it to finish
    assert not any(_alive(pid) for pid in started)
    assert not _port_open(api_url)
    assert not _port_open(aws_url)
    assert not (tmp_path / "stack.json").exists()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_starts_and_stops_on_signal(tmp_path: Path, stop_signal: signal.Signals) -> None:
    with_provider = stop_signal == signal.SIGINT and provider_available(REPO_ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "run", "--template", str(FIXTURE_TEMPLATE), "--state-dir", str(tmp_path)]
        + ([] if with_provider else ["--no-provider"]),
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "API_PORT": "0",
            "LAMBDA_PORT": "0",
            "AWS_PORT": "0",
            "PROVIDER_PORT": "0",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def read_output() -> None:
        for line in process.stdout or []:
            lines.put(line)

    threading.Thread(target=read_output, daemon=True).start()
    output: list[str] = []
    try:
        while not any("Ctrl-C" in line for line in output):
            try:
                output.append(lines.get(timeout=30))
            except queue.Empty:
                pytest.fail("no banner:\n" + "".join(output))
        info = json.loads((tmp_path / "stack.json").read_text())
        assert info["pid"] == process.pid
        urls = [info["api_url"], info["lambda_url"], info["aws_url"]]
        if with_provider:
            assert info["provider_url"]
            assert any(info["provider_url"] in line for line in output)
            urls.append(info["provider_url"])
        assert all(_port_open(url) for url in urls)
        assert any(info["api_url"] in line for line in output)
        process.send_signal(stop_signal)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not any(_port_open(url) for url in urls)
    assert not (tmp_path / "stack.json").exists()
