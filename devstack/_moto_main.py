"""The embedded AWS: moto's server app on a threaded werkzeug server (run as a subprocess).

Usage: ``python -P _moto_main.py <host> <port>`` (port 0 picks a free one). Prints ``PORT <n>``
once listening, and exits when its stdin closes (the stack ended, even if it was killed).
"""

from __future__ import annotations

import logging
import os
import sys
import threading


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    application = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, port, application, threaded=True, request_handler=MotoRequestHandler)
    os.environ["MOTO_PORT"] = str(server.server_port)

    def exit_with_parent() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
