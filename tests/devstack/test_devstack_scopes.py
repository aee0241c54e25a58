"""Scopes of local tokens: by default every scope a route requires, else exactly the ones asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from devstack.template import load_template, route_scopes
from tests.support.stack_fixtures import ApiClient

FIXTURE_TEMPLATE = REPO_ROOT / "tests" / "fixtures" / "devstack" / "template.yaml"


def _token_claims(state_dir: Path, *arguments: str, template: Path = DEFAULT_TEMPLATE) -> dict[str, Any]:
    command = ["token", "--tenant", "acme", "--state-dir", str(state_dir), "--template", str(template)]
    result = subprocess.run(
        [sys.executable, "-m", "devstack", *command, *arguments],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "API_PORT": "3999"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    claims: dict[str, Any] = jwt.decode(result.stdout.removesuffix("\n"), options={"verify_signature": False})
    return claims


@pytest.mark.parametrize(
    ("arguments", "scope"),
    [
        pytest.param((), "connections:manage connections:read", id="default-every-route-scope"),
        pytest.param(("--scopes", "connections:read"), "connections:read", id="read-only"),
        pytest.param(
            ("--scopes", "connections:read,connections:manage"), "connections:read connections:manage", id="comma"
        ),
    ],
)
def test_token_cli_scopes_without_a_running_stack(tmp_path: Path, arguments: tuple[str, ...], scope: str) -> None:
    assert _token_claims(tmp_path, *arguments)["scope"] == scope


def test_token_cli_with_empty_scopes_has_no_scope_claim(tmp_path: Path) -> None:
    claims = _token_claims(tmp_path, "--scopes", "")
    assert "scope" not in claims and "scp" not in claims


def test_route_scopes_follow_the_template_parameters() -> None:
    template = load_template(DEFAULT_TEMPLATE)
    defaults = {name: definition.get("Default", "") for name, definition in template["Parameters"].items()}
    assert route_scopes(template, defaults) == ["connections:manage", "connections:read"]
    assert route_scopes(template, defaults | {"ReadScope": "crm/read"}) == ["connections:manage", "crm/read"]
    assert route_scopes(template, defaults | {"RequireScopes": "false"}) == []


def test_token_cli_of_a_running_stack_carries_its_route_scopes(fixture_stack: Stack, fixture_api: ApiClient) -> None:
    assert fixture_stack.route_scopes == ["items.read"]
    claims = _token_claims(fixture_stack.state_dir, template=FIXTURE_TEMPLATE)
    assert claims["scope"] == "items.read"
    unscoped = fixture_api.as_tenant("acme", scope=None).get("/scoped")
    assert unscoped.status_code == 403 and unscoped.json() == {"message": "Forbidden"}
