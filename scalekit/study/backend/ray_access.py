"""Who can reach the Ray a study runs on. Plain settings and checks; :mod:`scalekit.study.backend.raytune` applies them.

Ray has no access control of its own unless token authentication is on: whoever reaches one of its ports can
run code as the user who started it. So a study that starts its own Ray (no ``backend.address``):

- binds every Ray service to the loopback interface. Ray's switch for a local-only node,
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (the default on macOS and Windows), makes the node's address
  127.0.0.1, and Ray's servers listen on the node's address; nothing else on the network can connect;
- turns on Ray's token authentication (``RAY_AUTH_MODE=token``) with a fresh random token for each run, kept in
  ``<study>/ray/auth_token`` (readable by the user only, removed when the run ends), so that another local
  user who reaches the loopback ports cannot submit work either.

With ``backend.address`` (a cluster someone started) Ray's own settings apply, and :func:`cluster_warning` says
when the cluster is reached over a public address without token authentication.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path

LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch: ``0`` makes a node local-only (its address 127.0.0.1)."""
AUTH_MODE = "RAY_AUTH_MODE"
TOKEN = "RAY_AUTH_TOKEN"
TOKEN_PATH = "RAY_AUTH_TOKEN_PATH"
ADDRESS = "RAY_ADDRESS"
TOKEN_FILE = "auth_token"
"""The token of a study's own Ray, in the study's ``ray/`` folder while it runs."""
DEFAULT_TOKEN = Path(".ray") / "auth_token"
"""Where Ray looks for a token under the home folder when no variable names one."""


def write_token(path: Path) -> Path:
    """A new random token in ``path``, readable and writable by its owner only (also when ``path`` existed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, secrets.token_hex(32).encode())
    finally:
        os.close(descriptor)
    return path


def local_environment(token_file: Path) -> dict[str, str]:
    """The environment of a study's own Ray: local-only, token authentication with ``token_file``."""
    return {LOCAL_ONLY: "0", AUTH_MODE: "token", TOKEN_PATH: str(token_file)}


def has_token_auth(environ: Mapping[str, str], home: Path) -> bool:
    """Whether a Ray driver with this environment authenticates with a token, as Ray decides it: the mode
    ``token``, or no mode given and a token at hand (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
    ``~/.ray/auth_token``)."""
    mode = environ.get(AUTH_MODE, "").strip().lower()
    if mode:
        return mode == "token"
    path = environ.get(TOKEN_PATH)
    return bool(environ.get(TOKEN)) or (Path(path).is_file() if path else (home / DEFAULT_TOKEN).is_file())


def _host(address: str) -> str:
    """The host of a Ray address: ``HOST:PORT``, ``ray://HOST:PORT``, ``[IPv6]:PORT``, or a bare host."""
    address = address.split("://", 1)[-1].strip()
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def _current_cluster() -> str | None:
    """The address of the cluster ``ray start`` left running on this machine (what ``auto`` joins)."""
    try:
        return (Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster").read_text().strip() or None
    except OSError:
        return None


def _public(host: str) -> list[str]:
    """The addresses ``host`` resolves to that are neither private nor loopback (none if it does not resolve)."""
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return []
    public = []
    for text in sorted(found):
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not (address.is_private or address.is_loopback):
            public.append(text)
    return public


def cluster_warning(address: str | None, environ: Mapping[str, str] = os.environ,
                    home: Path | None = None) -> str | None:
    """A warning when ``backend.address`` is a cluster reached over a public (not private, not loopback) address
    while this environment does not authenticate with a token; None otherwise (and without an address: the
    study's own Ray is local-only and authenticated)."""
    if address is None:
        return None
    target = address
    if address.strip().lower() == "auto":
        target = environ.get(ADDRESS) or _current_cluster() or ""
    if not target or has_token_auth(environ, home or Path.home()):
        return None
    public = _public(_host(target))
    if not public:
        return None
    return (f"backend.address: the Ray cluster at {target} is reached over the public address {public[0]} without "
            f"token authentication ({AUTH_MODE} is not 'token' and no token is set): anyone who reaches it can "
            "run code on the cluster; keep the cluster on a private network and start it with "
            f"{AUTH_MODE}=token (README, Security)")
