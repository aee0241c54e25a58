"""SnapStart: the functions the template snapshots reseed what their init seeded, and callers reach the alias."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack.template import Resolver
from oauth_connections.core import snapstart
from tests.conftest import REPO
from tests.unit.test_template import template

SNAPSHOTTED = ("GetTokenFunction", "CallApiFunction")

# Lambda's runtime hook library, which exists only in Lambda's Python runtimes: it records what is registered.
FAKE_HOOK_LIBRARY = """
registered = []
def register_after_restore(func, *args, **kwargs):
    registered.append(f"{func.__module__}.{func.__qualname__}")
    return func
def register_before_snapshot(func, *args, **kwargs):
    registered.append(f"before:{func.__module__}.{func.__qualname__}")
    return func
"""
IMPORT_FUNCTION = """
import json, sys
sys.path[:0] = sys.argv[1:]
import app, snapshot_restore_py
print(json.dumps(snapshot_restore_py.registered))
"""


def _hooks_registered_by(function: str, tmp_path: Path) -> list[str]:
    (tmp_path / "snapshot_restore_py.py").write_text(FAKE_HOOK_LIBRARY)
    paths = [
        str(tmp_path),
        str(REPO / "functions" / function),
        str(REPO / "layers/shared"),
        str(REPO / "clients/python/src"),
    ]
    output = subprocess.run(
        [sys.executable, "-c", IMPORT_FUNCTION, *paths], capture_output=True, text=True, check=True
    ).stdout
    registered: list[str] = json.loads(output.strip().splitlines()[-1])
    return registered


@pytest.mark.parametrize("function", ["get_token", "call_api"])
def test_a_snapshotted_function_registers_the_reseed_after_restore(function: str, tmp_path: Path) -> None:
    assert _hooks_registered_by(function, tmp_path) == ["oauth_connections.core.snapstart.reseed_random"]


def test_a_function_that_is_not_snapshotted_registers_no_hook(tmp_path: Path) -> None:
    assert _hooks_registered_by("get_connection", tmp_path) == []


# In Lambda (LAMBDA_TASK_ROOT set) the X-Ray SDK samples locally; elsewhere it would make its own clients.
INIT_STATE = """
import gc, json, socket, sys
sys.path[:0] = sys.argv[1:]
import botocore.client
import app
objects = gc.get_objects()
print(json.dumps({
    "clients": sorted(type(o).__name__ for o in objects if isinstance(o, botocore.client.BaseClient)),
    "sockets": sorted(o.type.name for o in objects if isinstance(o, socket.socket)),
}))
"""


@pytest.mark.parametrize("function", ["get_token", "call_api"])
def test_the_init_a_snapshot_keeps_has_no_client_and_no_connection(function: str, tmp_path: Path) -> None:
    paths = [str(REPO / "functions" / function), str(REPO / "layers/shared"), str(REPO / "clients/python/src")]
    environment = os.environ | {"LAMBDA_TASK_ROOT": str(tmp_path), "POWERTOOLS_TRACE_DISABLED": "false"}
    output = subprocess.run(
        [sys.executable, "-c", INIT_STATE, *paths], capture_output=True, text=True, check=True, env=environment
    ).stdout
    # The one socket is the X-Ray SDK's emitter: UDP to the local daemon, no connection to go stale.
    assert json.loads(output.strip().splitlines()[-1]) == {"clients": [], "sockets": ["SOCK_DGRAM"]}


def test_the_reseed_gives_a_resumed_environment_its_own_draws() -> None:
    random.seed(20)  # the state every environment resumed from one snapshot would share
    shared = [random.random() for _ in range(4)]
    random.seed(20)
    snapstart.reseed_random()
    assert [random.random() for _ in range(4)] != shared


def _resolved(logical_id: str, **parameters: str) -> dict[str, Any]:
    declared = template()["Parameters"]
    values = {name: parameters.get(name, definition.get("Default")) for name, definition in declared.items()}

    def attribute(resource: str, name: str | None) -> Any:
        return f"<{resource}.{name}>" if name else f"<{resource}>"

    resolver = Resolver(parameters=values, attribute=attribute, conditions=template()["Conditions"])
    return dict(resolver.resolve(template()["Resources"][logical_id]["Properties"]))


def test_snapstart_is_off_by_default() -> None:
    assert template()["Parameters"]["SnapStart"]["Default"] == "false"
    for function in SNAPSHOTTED:
        properties = _resolved(function)
        assert "SnapStart" not in properties
        assert properties["AutoPublishAlias"] == "live"
    feed_fetch = _resolved("FeedFetchFunction")["Environment"]["Variables"]
    assert feed_fetch["GET_TOKEN_FUNCTION_NAME"] == "<GetTokenFunction>"


def test_with_snapstart_the_functions_snapshot_their_versions_and_callers_invoke_the_alias() -> None:
    for function in SNAPSHOTTED:
        assert _resolved(function, SnapStart="true")["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    feed_fetch = _resolved("FeedFetchFunction", SnapStart="true")["Environment"]["Variables"]
    assert feed_fetch["GET_TOKEN_FUNCTION_NAME"] == "<GetTokenFunction>:live"
    outputs = template()["Outputs"]
    for function in SNAPSHOTTED:
        assert outputs[f"{function}AliasArn"]["Value"] == {"Fn::Sub": f"${{{function}.Arn}}:live"}
