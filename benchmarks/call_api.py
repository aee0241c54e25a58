"""CallApiFunction warm, in-process: its overhead over a plain request to the same local API, and its AWS calls.

Both sides call the same scripted loopback API in the same run, each over a pooled keep-alive connection,
so the ratio is the function's own cost: parsing, the connection's one read, the token's decryption (data
key cached), the engine's checks and the answer.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import requests
from scripted_api import Step, scripted_api

WARM_CALLS = 20


def measure(env: Any, iterations: int, counted: Any, per_service: Any) -> list[tuple[str, str, str]]:
    from tests.conftest import LambdaContext, load_handler

    handler = load_handler("call_api")
    with scripted_api() as api:
        api.script("/api/me", Step(200, {"Content-Type": "application/json"}, b'{"id": "bench"}'))
        connection_id = env.connected_connection(expires_in=3600, allowed_urls=[f"{api.base}/api/"])
        event = {"tenant_id": env.tenant, "connection_id": connection_id, "method": "GET", "path": "/me"}
        assert handler(event, LambdaContext())["status"] == 200  # warm: modules, data key, pooled connection
        plain = requests.Session()
        url = f"{api.base}/api/me"
        plain.get(url, headers={"Authorization": "Bearer bench"}, timeout=5)

        def timed(call: Any) -> list[float]:
            samples = []
            for _ in range(iterations):
                started = time.perf_counter()
                call()
                samples.append((time.perf_counter() - started) * 1000)
            return samples

        baseline = statistics.median(timed(lambda: plain.get(url, headers={"Authorization": "Bearer b"}, timeout=5)))
        through = statistics.median(timed(lambda: handler(event, LambdaContext())))
        token = statistics.median(timed(lambda: env.get_token(connection_id)))
        answers, calls = counted(lambda: [handler(event, LambdaContext()) for _ in range(WARM_CALLS)])
        assert all(answer["status"] == 200 for answer in answers), answers[0]
    return [
        (
            "warm CallApi overhead over a plain request",
            f"{through / baseline:.2f}x",
            f"p50 {through:.2f} ms against {baseline:.2f} ms for requests alone ({iterations} calls each, same "
            f"local API, same run); a warm GetToken (the same one read) takes {token:.2f} ms here",
        ),
        (
            "DynamoDB calls per warm CallApi call",
            f"{per_service(calls, 'dynamodb') / WARM_CALLS:g}",
            str(sorted(calls)),
        ),
        ("KMS calls per warm CallApi call", f"{per_service(calls, 'kms') / WARM_CALLS:g}", "data key cached in memory"),
    ]
