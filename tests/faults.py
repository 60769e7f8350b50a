"""Real operating-system faults for tests: a full disk, a read-only file system, a file that
cannot be read. Each is made by the kernel, not by a patched Python function, wherever this
machine allows it; where it does not, the helper raises `Unavailable` (a test skips, the
table of tests/bad_inputs.py says so) and the tests that patch `os.write` cover the code path.

- `small_disk(DIR, size)`: a tmpfs of `size` bytes mounted at DIR (writes past it: ENOSPC).
  Needs CAP_SYS_ADMIN (root in a container here).
- `read_only(DIR)`: DIR bind-mounted read-only onto itself: the same files, every new write
  refused with EROFS, while files a process already holds open stay writable (as when a file
  system is remounted read-only under a running program that keeps its descriptors).
- `unreadable_file(PATH)`: a file whose open() fails with EACCES: chmod 000 for a normal user;
  root reads any mode, so there PATH links to a write-only sysfs attribute, which the kernel
  refuses to open for reading even to root.
- `io_error_file(PATH)`: a link to /proc/self/mem, whose read at offset 0 fails with EIO.
- `symlink_loop(PATH)`: PATH -> PATH.loop -> PATH (ELOOP).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

SYSFS_WRITE_ONLY = ("/sys/bus/pci/rescan", "/sys/bus/platform/drivers_probe",
                    "/sys/bus/pci/drivers_probe", "/sys/kernel/mm/ksm/run")


class Unavailable(Exception):
    """This machine cannot make the fault (no privilege to mount, no such kernel file)."""


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise Unavailable(f"mount {' '.join(args)}: {done.stderr.strip() or done.returncode}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def can_mount() -> bool:
    """Whether this process may mount a tmpfs (tried, then undone)."""
    with tempfile.TemporaryDirectory() as directory:
        try:
            _mount("-t", "tmpfs", "-o", "size=4k", "tmpfs", directory)
        except (Unavailable, OSError):
            return False
        _umount(Path(directory))
        return True


class Mounted:
    """A mount made by a setup, undone when the case ends (a context manager)."""

    def __init__(self, path: Path, *args: str):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        _mount(*args, str(path))

    def __enter__(self) -> "Mounted":
        return self

    def __exit__(self, *exc: object) -> None:
        _umount(self.path)


def small_disk(path: Path, size: int) -> Mounted:
    """A tmpfs of `size` bytes at `path` (created if missing)."""
    return Mounted(path, "-t", "tmpfs", "-o", f"size={size}", "tmpfs")


def read_only(path: Path) -> Mounted:
    """`path` bind-mounted read-only onto itself (what is there stays; new writes: EROFS)."""
    path.mkdir(parents=True, exist_ok=True)
    return Mounted(path, "--bind", "-o", "ro", str(path))


@contextlib.contextmanager
def remounted_read_only(path: Path) -> Iterator[None]:
    """`read_only(path)` for the length of a `with` block."""
    with read_only(path):
        yield


def unreadable_file(path: Path) -> Path:
    """A file at `path` that open() refuses with EACCES (see the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.write_text('{"problem": "1+1", "answer": "2"}\n')
        path.chmod(0)
    else:
        target = next((t for t in SYSFS_WRITE_ONLY if os.path.isfile(t)), None)
        if target is None:
            raise Unavailable("root reads any file, and no write-only sysfs attribute is here")
        path.symlink_to(target)
    _expect(path, errno.EACCES)
    return path


def io_error_file(path: Path) -> Path:
    """A file at `path` whose read fails with EIO (see the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/proc/self/mem")
    _expect(path, errno.EIO)
    return path


def symlink_loop(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    other = path.with_name(path.name + ".loop")
    path.symlink_to(other)
    other.symlink_to(path)
    _expect(path, errno.ELOOP)
    return path


def _expect(path: Path, code: int) -> None:
    """The fault is real here: reading `path` fails with `code`, else Unavailable."""
    try:
        with open(path, "rb") as fh:
            fh.read(16)
    except OSError as err:
        if err.errno == code:
            return
        raise Unavailable(f"reading {path} failed with {err!r}, not {errno.errorcode[code]}")
    raise Unavailable(f"{path} could be read: this machine does not make {errno.errorcode[code]}")
