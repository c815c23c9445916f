"""The TCP ports a tree of processes listens on, read from Linux's ``/proc`` (nothing else is needed).

A study that starts its own Ray must leave nothing reachable from the network: :func:`listening` lists what a
set of processes listens on, :func:`descendants` gives the processes a driver started (Ray's GCS, raylet,
agents and workers are its children and grandchildren), and :attr:`Listener.loopback` tells whether a socket
is bound to the loopback interface only. Where ``/proc`` does not exist (macOS, Windows) :func:`supported` is
false and the lists are empty.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Literal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_LISTEN = "0A"
"""The TCP state LISTEN in ``/proc/net/tcp`` and ``tcp6``."""


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket: the process that holds it and the address it is bound to."""

    pid: int
    process: str
    address: str
    """The bound address as the kernel holds it: ``0.0.0.0`` or ``::`` for every interface, an IPv4-mapped
    ``::ffff:127.0.0.1`` for IPv4 on a dual-stack socket."""
    port: int

    @property
    def loopback(self) -> bool:
        """Bound to a loopback address (127.0.0.0/8 or ::1), so no other machine can connect."""
        address = ipaddress.ip_address(self.address)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback

    def describe(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.process} (pid {self.pid}) on {host}:{self.port}"


def supported() -> bool:
    """Whether this system shows its sockets in ``/proc`` (Linux)."""
    return (PROC / "net" / "tcp").is_file()


def _parent(pid: int) -> int | None:
    try:
        return int((PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descendants(root: int) -> set[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir() if supported() else ():
        if entry.name.isdigit():
            parent = _parent(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, queue = {root}, [root]
    while queue:
        for child in children.get(queue.pop(), []):
            if child not in found:
                found.add(child)
                queue.append(child)
    return found


def _address(hex_address: str) -> str:
    """An address of ``/proc/net/tcp{,6}``: 32-bit words in the host's byte order, as hex."""
    raw = bytes.fromhex(hex_address)
    order: Literal["little", "big"] = "little" if socket.htonl(1) != 1 else "big"
    words = b"".join(int.from_bytes(raw[i : i + 4], order).to_bytes(4, "big") for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def _listening_sockets() -> dict[int, tuple[str, int]]:
    """Every listening TCP socket of the system: its inode, bound address and port."""
    sockets = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN:
                address, port = fields[1].split(":")
                sockets[int(fields[9])] = (_address(address), int(port, 16))
    return sockets


def _socket_inodes(pid: int) -> list[int]:
    folder = PROC / str(pid) / "fd"
    inodes = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        try:
            target = os.readlink(folder / name)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.append(int(target[8:-1]))
    return inodes


def _name(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def listening(pids: Iterable[int]) -> list[Listener]:
    """The TCP sockets that the processes ``pids`` listen on, by pid and port."""
    sockets = _listening_sockets()
    found = {
        Listener(pid, _name(pid), *sockets[inode])
        for pid in set(pids) for inode in _socket_inodes(pid) if inode in sockets
    }
    return sorted(found, key=lambda listener: (listener.pid, listener.port, listener.address))
