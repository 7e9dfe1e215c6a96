"""Disk writes that fail with a named reason: the one home of the rule that a full,
read-only, over-quota or forbidden disk is the machine's problem, not a bug.

``storage_error`` turns such an OSError into a StorageError naming the condition, the path,
the free and needed space, and what to do; ``writing`` does it around a write and removes
the partial file; ``check_free_space`` refuses a write of known size before it starts.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from evaluation.engine.errors import StorageError

# np.save writes real files with fwrite and reports a short write as this, without errno;
# on a disk with room left it is something else, so free space decides (see storage_error).
_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")
# Below this much free space, a short write of unknown size is taken as a full disk.
_NEARLY_FULL_BYTES = 1 << 20


def free_bytes(path: Path) -> int:
    """Bytes this process may still write on the device holding ``path`` (which need not
    exist yet: its nearest existing parent is asked). Root may also use the blocks a file
    system reserves for it; quotas are not seen here (EDQUOT is named when it comes)."""
    for folder in (path, *path.parents):
        with suppress(OSError):
            stats = os.statvfs(folder)
            blocks = stats.f_bfree if os.geteuid() == 0 else stats.f_bavail
            return blocks * stats.f_frsize
    return 0


def human_size(size: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def check_free_space(
    folder: Path, needed: int, *, place: str, doing: str, resumable: bool = False
) -> None:
    """Refuse to start writing ``needed`` bytes into ``folder`` when they cannot fit."""
    free = free_bytes(folder)
    if free < needed:
        raise StorageError(_no_space(place, free, needed, doing) + _kept(resumable))


@contextmanager
def writing(
    path: Path,
    *,
    place: str,
    doing: str,
    needed: int | None = None,
    partial: Path | None = None,
    resumable: bool = False,
) -> Iterator[None]:
    """Around a write of ``path``: on any failure remove ``partial`` (the temporary file
    being written), and raise a storage condition as a StorageError naming it."""
    try:
        yield
    except BaseException as exc:
        if partial is not None:
            with suppress(OSError):
                partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            named = storage_error(
                exc, path=path, place=place, doing=doing, needed=needed, resumable=resumable
            )
            if named is not None:
                raise named from exc
        raise


def storage_error(
    exc: OSError,
    *,
    path: Path | None = None,
    place: str | None = None,
    doing: str | None = None,
    needed: int | None = None,
    resumable: bool = False,
) -> StorageError | None:
    """The StorageError for ``exc`` if it is a storage condition, else None (a real bug).

    ``path`` is the file being written (the error's own file name wins when it has one),
    ``place`` names the storage it lives in for the reader ("EMBEDDINGS_ROOT (/srv/emb)"),
    ``doing`` what the write was for, ``needed`` the bytes it still needed, if known;
    ``resumable`` says that a retry keeps the work already saved (extraction's chunks)."""
    target = Path(exc.filename) if exc.filename else path
    code = exc.errno
    if code is None and _SHORT_WRITE.match(str(exc)):
        if target is None or free_bytes(target) >= max(needed or 0, _NEARLY_FULL_BYTES):
            return None
        code = errno.ENOSPC
    if target is None:
        if code in (errno.EACCES, errno.EPERM):  # also said of signals, users, ...: not ours
            return None
        where, free = place or "a disk this process writes to", None
        doing = doing or "write a file (the worker log names it)"
    else:
        where, free = place or str(target.parent), free_bytes(target)
        doing = doing or f"write {target}"
    if code == errno.ENOSPC:
        return StorageError(_no_space(where, free, needed, doing) + _kept(resumable))
    if code == errno.EDQUOT:
        about = f" (about {human_size(needed)} needed)" if needed else ""
        return StorageError(
            f"Disk quota exceeded on the device holding {where} for user {_user()}: "
            f"could not {doing}{about}. Free some of that user's space or ask for a larger "
            f"quota, then retry{_kept(resumable)}"
        )
    if code in (errno.EACCES, errno.EPERM):
        reason = "Permission denied" if code == errno.EACCES else "Operation not permitted"
        return StorageError(
            f"{reason} on {target}: user {_user()} could not {doing}. Give that user write "
            f"access to {where} (or configure a folder it can write), then retry."
        )
    if code == errno.EROFS:
        return StorageError(
            f"{where} is on a read-only file system: could not {doing}"
            f"{f' ({target})' if target else ''}. Remount it read-write (or configure a "
            "writable folder), then retry."
        )
    if code == errno.EIO:
        return StorageError(
            f"The device holding {where} reported an input/output error: could not {doing}"
            f"{f' ({target})' if target else ''}. Check the disk (the kernel log names it), "
            "then retry."
        )
    return None


def _no_space(place: str, free: int | None, needed: int | None, doing: str) -> str:
    figures = [f"{human_size(free)} free"] if free is not None else []
    if needed:
        figures.append(f"about {human_size(needed)} needed")
    return (
        f"No space left on the device holding {place}"
        f"{': ' + ', '.join(figures) if figures else ''} to {doing}. Free some space there "
        "(or move it to a larger disk), then retry"
    )


def _kept(resumable: bool) -> str:
    return "; work already saved is kept." if resumable else "."


def _user() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a container user with no passwd entry
        return f"uid {uid}"
