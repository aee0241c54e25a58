"""Feeding RefreshWorkerFunction on the local stack: client-credentials connections whose tokens fall due
within seconds, and a slow provider for the refreshes that follow, so a test sees the worker's batch at work."""

from __future__ import annotations

import time
from typing import Any

from devstack import Stack
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import stored_item
from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint

# Connected with a token that lives 2 s: due for refresh once half of it has passed.
SHORT_TOKEN = {"access_token": "service-token", "token_type": "bearer", "expires_in": 2}
TOKEN = {"access_token": "service-token-2", "token_type": "bearer", "expires_in": 3600}
DUE_AFTER_SECONDS = 1.5


def connect_service_account(api: ApiClient, endpoint: ScriptedTokenEndpoint, label: str) -> str:
    """A client-credentials connection: connected at once, its short-lived token soon due for refresh."""
    body: dict[str, Any] = {
        "name": f"{label} {time.time_ns()}",
        "grant_type": "client_credentials",
        "client_id": "service",
        "client_secret": "service-secret",
        "token_url": endpoint.url,
    }
    created = api.post("/connections", json=body)
    assert created.status_code == 201, created.text
    connection_id: str = created.json()["id"]
    endpoint.queue(Scripted(body=SHORT_TOKEN))
    connected = api.post(f"/connections/{connection_id}/authorize", json={})
    assert connected.status_code == 200 and connected.json()["status"] == "connected", connected.text
    return connection_id


def token_versions(stack: Stack, tenant: str, connection_ids: list[str]) -> dict[str, Any]:
    """The stored token version of each connection, to tell later which of them were refreshed."""
    return {c: stored_item(stack, tenant, c)["token_version"] for c in connection_ids}


def slow_provider_once_due(endpoint: ScriptedTokenEndpoint, delay: float) -> None:
    """Wait until every short-lived token is due, then count only the refreshes, each answered after `delay`."""
    time.sleep(DUE_AFTER_SECONDS)
    endpoint.requests.clear()
    endpoint.default = Scripted(body=TOKEN, delay=delay)
