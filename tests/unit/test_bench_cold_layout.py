"""make bench's cold interpreters: what Lambda gives a function, never the dev virtualenv's packages."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig

from benchmarks.environment import LAMBDA_CHECK
from tests.conftest import REPO

REPORT = LAMBDA_CHECK + "import json; print(json.dumps(_not_in_lambda()))"


def _not_in_lambda(*path: str) -> list[str]:
    output = subprocess.run(
        [sys.executable, "-S", "-c", REPORT],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": ":".join(path)},
    ).stdout
    return list(json.loads(output))


def test_an_interpreter_that_reaches_the_dev_virtualenv_is_reported_with_what_it_reached() -> None:
    site_packages = sysconfig.get_paths()["purelib"]
    assert _not_in_lambda(site_packages) == ["awscrt", "OpenSSL", "moto", "pytest", site_packages]


def test_an_interpreter_on_the_function_folder_and_the_shared_layer_reaches_none_of_it() -> None:
    assert _not_in_lambda(str(REPO / "functions" / "get_token"), str(REPO / "layers" / "shared")) == []
