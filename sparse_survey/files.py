"""Files that no reader ever sees half written: a temporary file beside the target, then a rename.

Run records, benchmark records, IMP checkpoints and the decoded-image cache are all written this
way (:func:`atomic_write`), so a process killed mid-write leaves the previous file, or none. A kill
cannot remove its own temporary file, so :func:`remove_stale_temporaries` removes those whose
writing process is gone. :func:`check_room` finds, before hours of work, a folder that the work
could not write its results into.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file beside it (named after this
    process), which then replaces ``path``. If ``write`` fails, the temporary file is removed and
    the error raised; temporaries of killed processes are removed first. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``path`` (see :func:`atomic_write`) whose writing process no
    longer runs; return them."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"\.tmp(\d+)$")
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.glob(f"{path.name}.tmp*"):
        match = pattern.match(candidate.name)
        if match and not _running(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _running(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def check_room(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Raise ``OSError`` now, naming ``what`` goes there, unless ``folder`` can be made, a file
    written in it and removed, and it has ``needed`` bytes free: so that an unusable folder (a
    file in its place, no permission, a full disk) is found before the work, not after it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / f".writable{os.getpid()}", lambda tmp: tmp.write_bytes(b"ok")
                     ).unlink()
        free = shutil.disk_usage(folder).free
    except OSError as error:
        raise OSError(f"cannot write {what} into {folder} ({error.strerror or error}); choose "
                      "another folder") from None
    if free < needed:
        raise OSError(f"{folder} has {free / 2**20:,.0f} MiB free, and {what} need(s) about "
                      f"{needed / 2**20:,.0f} MiB; free some space or choose another folder")
