"""What a function resumed from a SnapStart snapshot renews before it serves.

With the template's SnapStart parameter on, GetTokenFunction and CallApiFunction are snapshotted after
their init, and every execution environment that scales out resumes from that one snapshot. Their init
imports modules and builds nothing that must be unique or fresh: AWS clients (and so credentials and
connections), the settings, the data key caches and the outbound HTTP sessions are all made on the first
call, after the restore, and the X-Ray SDK's UDP socket to the local daemon holds no connection. What
init does hold is the `random` module's state, seeded once when it is first imported, so that every
resumed environment would draw the same retry and backoff jitter; the hook reseeds it from the operating
system. `secrets`, `uuid.uuid4` and the cryptography read os.urandom and need nothing.

The hook library (snapshot_restore_py) ships with Lambda's Python runtimes only; where it is missing there
is no snapshot to resume from, and nothing is registered.
"""

from __future__ import annotations

import random


def register_restore_hooks() -> None:
    try:
        from snapshot_restore_py import register_after_restore  # type: ignore[import-not-found]
    except ImportError:
        return
    register_after_restore(reseed_random)


def reseed_random() -> None:
    random.seed()  # no argument: from os.urandom
