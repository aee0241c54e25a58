"""make bench: only the table reaches stdout; what the measured code and its children print goes to the log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.output import output_to_log

CHILD = "import sys; print('child stdout'); print('child stderr', file=sys.stderr)"


def test_measured_output_goes_to_the_log_and_the_table_to_stdout(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / ".bench" / "bench.log"
    with output_to_log(log) as progress:
        print('{"_aws": {"CloudWatchMetrics": []}}')  # what Powertools prints for a full metric set
        subprocess.run([sys.executable, "-c", CHILD], check=True)
        progress("warm retrieval")
    print("| measurement | value | note |")

    out, err = capfd.readouterr()
    assert out == "| measurement | value | note |\n"
    assert err == "bench: warm retrieval...\n"
    assert sorted(log.read_text().splitlines()) == [
        "child stderr",
        "child stdout",
        '{"_aws": {"CloudWatchMetrics": []}}',
    ]


def test_a_failure_still_reaches_the_terminal(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "bench.log"

    def failing_section() -> None:
        with output_to_log(log):
            print("before the failure")
            raise RuntimeError("section failed")

    with pytest.raises(RuntimeError, match="section failed"):
        failing_section()
    print("after")

    out, _ = capfd.readouterr()
    assert out == "after\n"
    assert log.read_text() == "before the failure\n"
