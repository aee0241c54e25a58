"""The distribution: a wheel that builds from this folder and imports where the service does not exist."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent

IMPORT_CHECK = r"""
import importlib.metadata, importlib.resources, importlib.util, json
import oauth_connections_client as client
from oauth_connections_client import netguard
meta = importlib.metadata.metadata("oauth-connections-client")
print(json.dumps({
    "file": client.__file__,
    "service": importlib.util.find_spec("oauth_connections") is not None,
    "netguard_error": netguard.UnsafeUrlError is client.UnsafeUrlError,
    "typed": importlib.resources.files(client).joinpath("py.typed").is_file(),
    "requires": sorted(meta.get_all("Requires-Dist") or []),
    "python": meta["Requires-Python"],
}))
"""


def test_the_wheel_installs_and_imports_without_the_service(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a build writes egg-info and build/ beside the sources: keep them out of the tree
    shutil.copytree(PROJECT, source, ignore=shutil.ignore_patterns("tests", "__pycache__", "*.egg-info", "build"))
    # The PEP 517 hook `pip wheel` calls, without pip's start-up cost; the README's `pip wheel` is the same build.
    subprocess.run(
        [sys.executable, "-c", "import sys, setuptools.build_meta as b; b.build_wheel(sys.argv[1])", tmp_path / "dist"],
        cwd=source,
        check=True,
        capture_output=True,
    )
    [wheel] = (tmp_path / "dist").glob("oauth_connections_client-*.whl")
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True)

    # A fresh interpreter in an empty folder, with only the installed wheel on PYTHONPATH (its declared
    # dependencies, requests and boto3, come from this interpreter's site-packages).
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(result.stdout)
    assert Path(found["file"]).is_relative_to(site)
    assert found["service"] is False
    assert found["netguard_error"] is True
    assert found["typed"] is True
    assert found["requires"] == ["boto3<2,>=1.34", "requests<3,>=2.32"]
    assert found["python"] == ">=3.13"
