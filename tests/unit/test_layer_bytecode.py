"""The layers ship their bytecode: Lambda's /opt is read-only, so a layer of sources is compiled at every cold start."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SHARED = REPO / "layers" / "shared"
CLIENT = REPO / "clients" / "python" / "src"


def _build_shared_layer(artifacts: Path) -> Path:
    subprocess.run(
        ["make", "--no-print-directory", "-s", "-C", str(SHARED), "build-SharedLayer", f"ARTIFACTS_DIR={artifacts}"],
        check=True,
        env=os.environ | {"PYTHON": sys.executable},
    )
    return artifacts / "python"


def test_the_shared_layer_holds_bytecode_for_every_module_that_python_loads_without_checking_the_source(
    tmp_path: Path,
) -> None:
    layer = _build_shared_layer(tmp_path)
    sources = sorted(layer.rglob("*.py"))
    assert len(sources) == len(list((SHARED / "oauth_connections").rglob("*.py")))
    for source in sources:
        cached = Path(importlib.util.cache_from_source(str(source)))
        flags = int.from_bytes(cached.read_bytes()[4:8], "little")
        assert flags == 0b01, source  # hash-based, source never checked

    # A source changed after the build is not read: the module comes from the shipped bytecode.
    clock = layer / "oauth_connections" / "core" / "clock.py"
    clock.write_text("raise RuntimeError('the source was compiled again')\n")
    subprocess.run(
        [sys.executable, "-S", "-c", "import oauth_connections.core.clock"],
        check=True,
        env={"PYTHONPATH": str(layer), "PYTHONDONTWRITEBYTECODE": "1"},
    )


def test_the_client_layer_ships_bytecode_for_every_module_too(tmp_path: Path) -> None:
    subprocess.run(
        ["make", "--no-print-directory", "-s", "-C", str(CLIENT), "build-ClientLayer", f"ARTIFACTS_DIR={tmp_path}"],
        check=True,
        env=os.environ | {"PYTHON": sys.executable},
    )
    sources = sorted((tmp_path / "python").rglob("*.py"))
    assert [s.name for s in sources] == sorted(p.name for p in (CLIENT / "oauth_connections_client").glob("*.py"))
    for source in sources:
        flags = int.from_bytes(Path(importlib.util.cache_from_source(str(source))).read_bytes()[4:8], "little")
        assert flags == 0b01, source  # hash-based, source never checked
    assert not (tmp_path / "python" / "Makefile").exists()  # only the package ships
