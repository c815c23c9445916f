"""One writer per study directory: an exclusive lock that names its holder.

``study run`` holds ``<study_dir>/.scalekit.lock`` for its whole run. The lock is an ``flock`` on that file, so
the kernel releases it the moment the holding process dies (a SIGKILL included): a lock left by a dead process
is never in the way. The file's content (host, PID, start time, command) is only there to name the holder in
the error a second writer gets. ``flock`` is reliable on local filesystems; on network filesystems (NFS, some
cluster mounts) it may be emulated or ignored, which the README's "Faults" section states.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from scalekit.errors import ScalekitError
from scalekit.records import StudyDir



class StudyLockedError(ScalekitError):
    """Another process holds the study directory."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"PID {info.get('pid')} on host {info.get('host')} (since {since}: {info.get('command', '?')})"


class StudyLock:
    """``with StudyLock(study_dir):`` holds the study directory, or raises :class:`StudyLockedError` at once."""

    def __init__(self, study_dir: Path) -> None:
        self.path = StudyDir(Path(study_dir)).lock
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise StudyLockedError(
                f"{self.path.parent} is in use by {_holder(self.path)}; wait for that run to end or stop it "
                "(one `study run` writes a study at a time)"
            ) from None
        info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
