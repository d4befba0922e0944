"""Output files of the subcommands: checked before the work, written atomically after it.

A run that takes minutes must not fail at its end on a path it could have refused at its
start, and a failed write must never truncate or replace a file that was there before.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from forescale.core.errors import InvalidInputError, os_reason


def check_output(path: Path, flag: str, *, inputs: Iterable[tuple[str, Path | None]] = ()
                 ) -> None:
    """Refuse ``path`` now if it cannot be written later: its directory is missing, is not
    a directory or is not writable, the path is a directory, or it is one of ``inputs``
    (writing the results over the trace they were computed from)."""
    parent = path.parent
    _refuse_unusable_name(path, flag)
    if path.is_dir():
        raise InvalidInputError(f"{flag} {path}: is a directory")
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "no such directory"
        raise InvalidInputError(f"{flag} {path}: {parent}: {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{flag} {path}: cannot write in {parent}")
    for other_flag, other in inputs:
        if other is not None and _same_file(path, other):
            raise InvalidInputError(f"{flag} {path} is the {other_flag} file: refusing to "
                                    "write over it")


def _refuse_unusable_name(path: Path, flag: str) -> None:
    """A name the system refuses outright (too long, a symlink loop) is its own error, not
    "no such file"; a path that does not exist (yet) is fine."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        raise InvalidInputError(f"{flag} {path}: {os_reason(exc)}"
                                ) from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where they would be
        return a.resolve() == b.resolve()


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``:
    readers see the old file or the new one, and a failure leaves the old one as it was.
    The new file gets the old one's permissions, or the umask's for a new file."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_directory(path: Path, flag: str) -> None:
    """Refuse ``path`` now if a directory cannot be made or written there later: it, or
    its nearest existing ancestor, is not a directory or is not writable."""
    _refuse_unusable_name(path, flag)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "exists and is" if existing == path else f"{existing} is"
        raise InvalidInputError(f"{flag} {path}: {where} not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{flag} {path}: cannot write in {existing}")
