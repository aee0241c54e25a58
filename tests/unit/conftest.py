"""Unit-test fixtures. Public DNS cannot be reached from this machine, so names under example.com
resolve through a fixed table here (as a public resolver would answer); every other name, localhost
included, goes to the machine's real resolver."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import InProcessApi, Resources
from tests.support.provider import OidcProvider, standard_clients

PUBLIC_ADDRESS = "93.184.215.14"
FIXED_ANSWERS = {
    "internal.example.com": ["10.0.0.7"],
    "metadata.example.com": ["169.254.169.254"],
    "mixed.example.com": [PUBLIC_ADDRESS, "192.168.0.10"],
    "v6only.example.com": ["2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
}

_real_getaddrinfo = socket.getaddrinfo


def fixed_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name.endswith(".example.com") or name == "example.com":
        addresses = FIXED_ANSWERS.get(name, [PUBLIC_ADDRESS])
        port_number = int(port or 0)
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (a, port_number, 0, 0) if ":" in a else (a, port_number),
            )
            for a in addresses
        ]
    if name.endswith((".invalid", ".test")):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return _real_getaddrinfo(host, port, *args, **kwargs)


@pytest.fixture(autouse=True)
def public_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    monkeypatch.setattr(socket, "getaddrinfo", fixed_getaddrinfo)
    return FIXED_ANSWERS


@pytest.fixture(scope="session")
def provider() -> Iterator[OidcProvider]:
    """The real authorization server, with the in-process API's callback registered for every client."""
    with OidcProvider(standard_clients("https://api.example.com/oauth2/callback"), access_token_ttl=600) as running:
        yield running


@pytest.fixture
def flow_api(service_env: Resources, monkeypatch: pytest.MonkeyPatch) -> InProcessApi:
    """A fresh tenant; the provider runs on loopback, which only the local-stack setting admits."""
    from oauth_connections.core.config import get_settings

    monkeypatch.setenv("ALLOW_INSECURE_LOOPBACK_URLS", "true")
    get_settings.cache_clear()
    return InProcessApi(tenant=f"flow-{time.time_ns()}")
