"""``python -m devstack run`` starts the local stack; ``python -m devstack token`` prints a bearer token."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from devstack import config


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in ("0", "false", "no", "off")


def _parse_claim(text: str) -> tuple[str, Any]:
    name, separator, raw = text.partition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def _token(arguments: argparse.Namespace) -> int:
    from devstack.stack_info import token_settings
    from devstack.tokens import load_or_create_key, mint, scope_claim

    if not arguments.tenant.strip():
        print(
            "error: the tenant is empty; name the tenant the token is for, e.g. make dev-token TENANT=acme",
            file=sys.stderr,
        )
        return 2
    state_dir = Path(arguments.state_dir).resolve() if arguments.state_dir else config.default_state_dir()
    settings = token_settings(state_dir, Path(arguments.template))
    scopes = settings.scopes if arguments.scopes is None else arguments.scopes.replace(",", " ").split()
    token = mint(
        load_or_create_key(state_dir),
        issuer=settings.issuer,
        audience=settings.audience,
        subject=arguments.user,
        tenant_claim=settings.tenant_claim,
        tenant_id=arguments.tenant,
        expires_in=arguments.expires_in,
        claims=scope_claim(scopes) | dict(arguments.claim or []),
    )
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    return 0


def _banner(stack: Any) -> str:
    state = str(stack.state_dir)
    if stack.state_dir.is_relative_to(Path.cwd()):
        state = os.path.relpath(stack.state_dir, Path.cwd())
    lines = [
        "",
        f"Local stack '{stack.stack_name}' is running ({len(stack.functions)} functions, {len(stack.routes)} routes)",
        f"  Console         {stack.console_url}  (sign in with any tenant and user name)",
        f"  API             {stack.api_url}",
        f"  Lambda endpoint {stack.lambda_url}",
        f"  Embedded AWS    {stack.aws_url}  (region {config.REGION}, credentials testing/testing)",
    ]
    if stack.provider_url:
        lines.append(f"  Demo provider   {stack.provider_url}")
    if stack.return_url:
        lines.append(f"  Return page     {stack.return_url}  (a return_url that shows the outcome)")
    schedules = (
        f"on (speed-up x{stack.schedule_speedup:g})" if stack.schedules_enabled else f"off ({config.ENV_SCHEDULES}=0)"
    )
    iam = (
        "each function may do only what its template policy allows"
        if stack.iam_enabled
        else f"off ({config.ENV_IAM}=0)"
    )
    lines += [
        f"  Schedules       {schedules}",
        f"  IAM             {iam}",
        f"  Logs            {state}/logs/  (one line per request and run here; make run LOGS=all adds every log line)",
        "",
        "  Bearer token:   make dev-token TENANT=acme [USER=alice] [SCOPES=connections:read]",
        '  Try:            curl -H "Authorization: Bearer $(make -s dev-token TENANT=acme)" \\',
        f"                       {stack.api_url}/connections",
        "",
        "Press Ctrl-C to stop.",
        "",
    ]
    lines += [f"warning: {warning}" for warning in stack.warnings]
    return "\n".join(lines)


def _run(arguments: argparse.Namespace) -> int:
    from devstack.provider import provider_available
    from devstack.stack import Stack, StackError

    repo_root = config.REPO_ROOT
    api_port = config.env_port("API_PORT", config.DEFAULT_API_PORT)
    state_dir = (
        Path(arguments.state_dir).resolve() if arguments.state_dir else config.default_state_dir(api_port=api_port)
    )
    speedup = float(os.environ.get(config.ENV_SCHEDULE_SPEEDUP) or arguments.schedule_speedup)
    stack = Stack(
        template_path=Path(arguments.template),
        repo_root=repo_root,
        state_dir=state_dir,
        api_port=api_port,
        lambda_port=config.env_port("LAMBDA_PORT", config.DEFAULT_LAMBDA_PORT),
        aws_port=config.env_port("AWS_PORT", config.DEFAULT_AWS_PORT),
        console_port=config.env_port("CONSOLE_PORT", config.DEFAULT_CONSOLE_PORT),
        schedules=_env_flag(config.ENV_SCHEDULES, not arguments.no_schedules),
        schedule_speedup=speedup,
        with_provider=not arguments.no_provider and provider_available(repo_root),
        provider_port=config.env_port("PROVIDER_PORT", config.DEFAULT_PROVIDER_PORT),
        return_page=True,
        all_logs=arguments.all_logs or _env_flag(config.ENV_ALL_LOGS, False),
        iam=_env_flag(config.ENV_IAM, True),
        return_port=config.env_port("RETURN_PORT", config.DEFAULT_RETURN_PORT),
    )
    stopping = threading.Event()

    def on_signal(number: int, frame: FrameType | None) -> None:
        if stopping.is_set():
            return
        stopping.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()  # stops what it started if it fails
    except StackError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    try:
        print(_banner(stack), flush=True)
        # Short waits: a signal may land on another thread, and Python runs the handler only
        # once the main thread gets back to the interpreter loop.
        while not stopping.wait(0.25):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stopping.set()  # a second Ctrl-C must not interrupt the clean-up
        print("\nStopping the local stack...", file=sys.stderr, flush=True)
        stack.stop()
        print("Stopped.", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--template", default=str(config.DEFAULT_TEMPLATE), help="SAM template (template.yaml)")
    common.add_argument("--state-dir", help=f"keys, logs and state (default: .devstack/ or ${config.ENV_STATE_DIR})")
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", parents=[common], help="start the local stack until Ctrl-C")
    run.add_argument("--no-schedules", action="store_true", help=f"do not fire schedules ({config.ENV_SCHEDULES}=0)")
    run.add_argument(
        "--schedule-speedup",
        type=float,
        default=1.0,
        help=f"schedule clock speed-up factor ({config.ENV_SCHEDULE_SPEEDUP})",
    )
    run.add_argument("--no-provider", action="store_true", help="do not start the demo OAuth2 provider")
    run.add_argument(
        "--all-logs",
        action="store_true",
        help=f"stream every log line of every function, not only one line per request and run ({config.ENV_ALL_LOGS}=1)",
    )

    token = commands.add_parser(
        "token", parents=[common], help="print a bearer token for the local API (and nothing else)"
    )
    token.add_argument("--tenant", required=True)
    token.add_argument("--user", default="dev-user")
    token.add_argument(
        "--scopes",
        help='the scope claim, space- or comma-separated (default: every scope a route requires; "": none)',
    )
    token.add_argument("--expires-in", type=int, default=3600, help="seconds (default 3600)")
    token.add_argument("--claim", action="append", type=_parse_claim, help="extra claim NAME=VALUE (JSON value ok)")

    arguments = parser.parse_args(argv)
    if arguments.command == "token":
        return _token(arguments)
    return _run(arguments)


if __name__ == "__main__":
    sys.exit(main())
