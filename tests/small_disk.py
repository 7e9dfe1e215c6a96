"""Real small disks for storage-failure tests: a tmpfs of a few hundred kB is a real device
that fills up (ENOSPC from write, SIGBUS from a memory map), and can be remounted read-only.

Mounting needs root with CAP_SYS_ADMIN (the project's machines and CI run tests as root);
elsewhere the tests that need it are skipped, and the monkeypatched ones still run.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@contextmanager
def small_tmpfs(path: Path, *, size: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` bytes on ``path`` (skip the test if that is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    done = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    """Remount the tmpfs on ``path`` with new options: "ro", "rw", "size=1m"."""
    done = _mount("-o", f"remount,{options}", str(path))
    assert done.returncode == 0, done.stderr


def fill(path: Path, *, leave: int) -> Path:
    """Fill the device holding ``path`` with a ballast file until ``leave`` bytes are free."""
    stats = os.statvfs(path)
    free = stats.f_bavail * stats.f_frsize
    assert free > leave, f"only {free} bytes free on {path}, cannot leave {leave}"
    ballast = path / "ballast"
    with open(ballast, "wb") as handle:
        handle.write(b"\0" * (free - leave))
    return ballast
