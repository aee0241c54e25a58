"""Unit-test fixtures. Public DNS cannot be reached from this machine, so names under example.com
resolve through a fixed table here (as a public resolver would answer); every other name, localhost
included, goes to the machine's real resolver."""

from __future__ import annotations

import socket
from typing import Any

import pytest

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
