"""The one base class of bad input.

Every error that means "the input is wrong" (a flag, a data file, a checkpoint, an image, a
workdir, a NaN loss) derives from `FashionJaxError`. The CLI prints it as one `error:` line and
exits 2; anything else that escapes a command is a bug and keeps its traceback. Each subclass also
derives from the builtin it refines (ValueError, RuntimeError, ...), so library callers can catch
either.
"""

from __future__ import annotations

import errno

# OS errors about a path, that the user can fix (a missing, read-only, full or busy place), are bad
# input too when they name the path; any other OSError is ours to explain.
USER_PATH_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOSPC,
        errno.EEXIST,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENOTEMPTY,
        errno.EDQUOT,
        errno.ENAMETOOLONG,
        errno.EBUSY,
        errno.ELOOP,
    }
)


class FashionJaxError(Exception):
    """Bad input, told in one line that names the cause."""


def is_bad_input(err: BaseException) -> bool:
    """True for our bad-input errors and for OS errors about a path the user can fix."""
    if isinstance(err, FashionJaxError):
        return True
    return (
        isinstance(err, OSError)
        and err.filename is not None
        and (err.errno in USER_PATH_ERRNOS or isinstance(err, (FileNotFoundError, PermissionError)))
    )
