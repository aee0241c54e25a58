"""Which process owns a loopback TCP connection, and what a process's environment says (Linux /proc)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def tcp_socket_inodes(local_port: int, remote_port: int) -> set[int]:
    """Inodes of the sockets whose local port is ``local_port`` and remote port ``remote_port``."""
    inodes: set[int] = set()
    for table in _TCP_TABLES:
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and _port_of(fields[1]) == local_port and _port_of(fields[2]) == remote_port:
                inodes.add(int(fields[9]))
    inodes.discard(0)  # a socket in TIME_WAIT belongs to nobody
    return inodes


def pid_holding_tcp_connection(local_port: int, remote_port: int, candidates: Iterable[int]) -> int | None:
    """The candidate process with a socket from ``local_port`` to ``remote_port`` open, if any."""
    wanted = {f"socket:[{inode}]" for inode in tcp_socket_inodes(local_port, remote_port)}
    if not wanted:
        return None
    for pid in candidates:
        try:
            descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                if os.readlink(descriptor) in wanted:
                    return pid
            except OSError:
                continue
    return None


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (entry.decode(errors="replace").partition("=") for entry in raw.split(b"\0") if entry)
    return {name: value for name, _, value in pairs}
