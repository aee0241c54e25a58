"""The embedded AWS: moto's server app on a threaded werkzeug server (run as a subprocess).

Usage: ``python -P _moto_main.py <host> <port>`` (port 0 picks a free one), with the repository root on
``PYTHONPATH``. Prints ``PORT <n>`` once listening, and exits when its stdin closes (the stack ended,
even if it was killed).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from devstack.iam import IamEnforcement


class SerializedDynamoDB:
    """One DynamoDB request at a time, as DynamoDB applies each conditional write atomically.

    moto reads the item, evaluates the condition and then writes, with nothing held in between: two
    conditional writes served by two threads at once could both pass (two refresh leases taken on one
    item). Other services are served concurrently, as before.
    """

    def __init__(self, application: Callable[..., Iterable[bytes]]) -> None:
        self._application = application
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            return self._application(environ, start_response)
        with self._lock:
            return list(self._application(environ, start_response))


def embedded_aws_application() -> IamEnforcement:
    """moto behind the functions' IAM policies (once the stack posts them) and one-at-a-time DynamoDB."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return IamEnforcement(SerializedDynamoDB(DomainDispatcherApplication(create_backend_app)))


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(host, port, embedded_aws_application(), threaded=True, request_handler=MotoRequestHandler)
    os.environ["MOTO_PORT"] = str(server.server_port)

    def exit_with_parent() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
