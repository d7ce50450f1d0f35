"""An exclusive lock on a file that the OS drops when its process dies, however it dies (so a
kill -9 never leaves a stale lock), on POSIX and on Windows.

POSIX: fcntl.flock. Windows, which has no fcntl: msvcrt.locking of one byte. Where neither module
exists (a POSIX Python with fcntl hidden, as the portability tests run it): os.lockf. Each module
is imported inside the function that needs it, so importing this one works everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

# Windows byte locks are mandatory (a locked byte cannot be read by another process), so the byte
# locked lies far past the holder's line, which a refused process must still read.
_LOCKED_BYTE = 1 << 30


def _fcntl() -> ModuleType | None:
    try:
        import fcntl
    except ImportError:
        return None
    return fcntl


def try_lock(path: Path) -> tuple[int, bool]:
    """Open `path` (created if missing) and try to take its exclusive lock without waiting:
    (descriptor, whether the lock was taken). Closing the descriptor releases the lock. OSError if
    the file cannot be opened."""
    fcntl = _fcntl()
    if fcntl is None:
        return _try_lock_byte(path)
    # Read-only: flock needs no write access, and a file held open for writing would keep the
    # filesystem from being remounted read-only under a running trainer.
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return fd, False
    return fd, True


def _try_lock_byte(path: Path) -> tuple[int, bool]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
    os.lseek(fd, _LOCKED_BYTE, os.SEEK_SET)
    try:
        import msvcrt
    except ImportError:
        msvcrt = None
    try:
        if msvcrt is not None:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            # A POSIX record lock: per process rather than per descriptor, and dropped by any
            # close of the file in this process; write_holder writes through `fd` for that reason.
            os.lockf(fd, os.F_TLOCK, 1)
    except OSError:
        return fd, False
    return fd, True


def read_holder(fd: int) -> list[str]:
    """The words of the holder's line (write_holder), read through the refused descriptor."""
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 200).decode(errors="replace").split()


def write_holder(path: Path, fd: int, line: str) -> None:
    """Write who holds the lock, in place: replacing the file (a rename) would leave the lock on
    a file that no later opener sees. OSError if it cannot be written."""
    if _fcntl() is not None:
        with open(path, "w") as holder:  # flock's descriptor is read-only
            holder.write(line)
        return
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, line.encode())
