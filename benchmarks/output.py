"""Where the benchmarks' output goes: the table to the terminal, everything else to a log file."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path


@contextmanager
def output_to_log(path: Path) -> Iterator[Callable[[str], None]]:
    """Points file descriptors 1 and 2 (this process's and every child's) and sys.stdout/stderr at the log
    while the block runs; yields a progress printer on the terminal's stderr. Afterwards stdout is the
    terminal's again, and a failure's traceback reaches the terminal's stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(saved[1]), "w")

    def progress(section: str) -> None:
        print(f"bench: {section}...", file=console, flush=True)

    with path.open("w") as log, redirect_stdout(log), redirect_stderr(log):
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield progress
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            console.close()
