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
import requests

from devstack import Stack
from devstack.config import REPO_ROOT, default_state_dir
from devstack.provider import provider_available
from devstack.stack import StackError
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
    # One line: the token and a newline, so that the shell prompt starts on its own line.
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+\n", result.stdout), repr(result.stdout)
    token = result.stdout.removesuffix("\n")
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    response = fixture_api.with_token(token).get("/items/1")
    assert response.status_code == 200, response.text
    claims = response.json()["event"]["requestContext"]["authorizer"]["jwt"]["claims"]
    assert claims["tenant_id"] == "acme"
    assert claims["sub"] == "alice"


def test_token_cli_without_a_running_stack(tmp_path: Path) -> None:
    result = _devstack("token", "--tenant", "globex", "--state-dir", str(tmp_path), env={"API_PORT": "3999"})
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.removesuffix("\n"), options={"verify_signature": False})
    assert claims["iss"] == "http://127.0.0.1:3999/local-issuer"
    assert claims["aud"] == "oauth-connections-local"
    assert claims["tenant_id"] == "globex"
    assert claims["sub"] == "dev-user"
    assert (tmp_path / "jwt-signing-key.pem").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("tenant", ["", "  "], ids=["empty", "blank"])
def test_token_cli_refuses_an_empty_tenant(tmp_path: Path, tenant: str) -> None:
    result = _devstack("token", "--tenant", tenant, "--state-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "the tenant is empty" in result.stderr and "TENANT=acme" in result.stderr


def test_make_dev_token_with_an_empty_tenant_fails_at_once(tmp_path: Path) -> None:
    result = subprocess.run(
        # -o setup: the environment is set up already; this checks the target's own recipe.
        ["make", "-s", "-o", "setup", "dev-token", "TENANT="],
        cwd=REPO_ROOT,
        env={**os.environ, "DEVSTACK_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert "error: the tenant is empty" in result.stderr


def test_each_api_port_has_its_own_state_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DEVSTACK_STATE_DIR", raising=False)
    assert default_state_dir(tmp_path, 3000) == tmp_path / ".devstack"
    assert default_state_dir(tmp_path, 3100) == tmp_path / ".devstack" / "api-3100"
    monkeypatch.setenv("API_PORT", "3200")
    assert default_state_dir(tmp_path) == tmp_path / ".devstack" / "api-3200"
    monkeypatch.setenv("DEVSTACK_STATE_DIR", str(tmp_path / "elsewhere"))
    assert default_state_dir(tmp_path, 3100) == tmp_path / "elsewhere"


def test_a_second_stack_in_the_same_state_folder_is_refused(tmp_path: Path) -> None:
    """The second stack stops before touching anything: the first keeps its logs and its stack.json."""
    with Stack(template_path=FIXTURE_TEMPLATE, state_dir=tmp_path, echo_logs=False) as first:
        first.invoke("EchoFunction", {})
        logs_before = sorted(path.name for path in (tmp_path / "logs").iterdir())
        assert "EchoFunction.log" in logs_before
        second = Stack(template_path=FIXTURE_TEMPLATE, state_dir=tmp_path, echo_logs=False)
        with pytest.raises(StackError) as refused:
            second.start()
        message = str(refused.value)
        assert f"another local stack (pid {os.getpid()}, API {first.api_url})" in message
        assert str(tmp_path) in message and "API_PORT" in message
        assert sorted(path.name for path in (tmp_path / "logs").iterdir()) == logs_before
        assert json.loads((tmp_path / "stack.json").read_text())["api_url"] == first.api_url
        first.invoke("EchoFunction", {})
        assert len(first.function_logs("EchoFunction")) >= 2
        assert not second.running
    with Stack(template_path=FIXTURE_TEMPLATE, state_dir=tmp_path, echo_logs=False) as third:
        assert third.running  # the folder is free again once the first has stopped


def test_run_refuses_a_second_stack_in_the_same_state_folder(tmp_path: Path) -> None:
    with Stack(template_path=FIXTURE_TEMPLATE, state_dir=tmp_path, echo_logs=False) as first:
        result = _devstack(
            "run",
            "--no-provider",
            "--template",
            str(FIXTURE_TEMPLATE),
            "--state-dir",
            str(tmp_path),
            env={"API_PORT": "0", "LAMBDA_PORT": "0", "AWS_PORT": "0", "RETURN_PORT": "0"},
        )
        assert result.returncode == 1
        assert result.stderr.startswith(f"error: another local stack (pid {os.getpid()}, API {first.api_url})")
        assert "Traceback" not in result.stderr and "Ctrl-C" not in result.stdout
        assert first.running and (tmp_path / "logs").is_dir()


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
            "RETURN_PORT": "0",
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
        urls = [info["api_url"], info["lambda_url"], info["aws_url"], info["return_url"].removesuffix("/connected")]
        assert any(f"Return page     {info['return_url']}" in line for line in output)
        assert requests.get(info["return_url"] + "?status=connected", timeout=10).status_code == 200
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
