"""What a run does to files: one atomic writer, one file mode, and the lock on an output directory.

- `atomic_write` writes a temporary sibling, fsyncs it and renames it over the target, so a
  reader (or a crash) never sees half a file. The file gets the mode `open()` would give it
  (0666 minus the umask), not `mkstemp`'s 0600: results.json, `<method>.jsonl` and the tree
  files of one run directory share one mode.
- `check_output_dir` says, without writing anything, whether a directory can be a run's output.
- `os_reason` says why the OS refused a read or a write, in words with what to do about it
  (a full disk, a read-only file system, a permission, a symlink loop), and `WriteError` is
  the one-line error of a write that failed: a run's files are never left half-written, and
  the message names the path.
- `OutputLock` holds an advisory lock (`fcntl.flock`) on `DIR/.eager-eval.lock` while a run uses
  DIR. A second run into DIR, with or without `--resume`, stops at once with one line naming the
  directory and the holder's pid; without it, two runs would delete or interleave each other's
  trees. The kernel drops the lock when its process ends, so a killed run never leaves a stale
  lock behind. The lock removes the lock file, and the directories it made if they stayed
  empty, on release: a start that fails leaves the parent as it was.

No torch or transformers here (the CLI checks an output directory before loading a model).
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from pathlib import Path

from eager_eval.common.errors import UserError

LOCK_NAME = ".eager-eval.lock"


class OutputDirError(ValueError, UserError):
    """An output directory cannot be used; the message names it and the fix."""


class OutputInUseError(OutputDirError):
    """Another process holds the lock on the output directory."""

    def __init__(self, directory: Path, pid: int | None):
        self.directory = directory
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"output directory {directory} is in use by another eager-eval run "
                         f"({holder}); wait for it to end, or use another --output directory")


class WriteError(OSError, UserError):
    """A file could not be written (disk full, read-only file system, permission); the
    message names the path, the OS's reason and what to do. Still an OSError for callers
    that catch those."""

    def __init__(self, message: str, err: OSError | None = None):
        super().__init__(message)
        self.errno = err.errno if err is not None else None
        self.filename = err.filename if err is not None else None

    def __str__(self) -> str:
        return str(self.args[0])


_OS_HINTS = {
    errno.ENOSPC: "free space on that disk",
    errno.EDQUOT: "free space within your disk quota",
    errno.EROFS: "the file system is read-only (remounted so after a disk error?); fix or "
                 "remount it, or use another directory",
    errno.EACCES: "check its permissions (and those of the directories above it)",
    errno.EPERM: "check its permissions (and those of the directories above it)",
    errno.EIO: "the disk or network file system failed to read or write it; check the device "
               "(dmesg) or copy the file from a good source",
    errno.ELOOP: "a symbolic link on that path points back at itself; fix the link",
    errno.EISDIR: "it is a directory, not a file",
    errno.ENOTDIR: "a part of that path is a file, not a directory",
    errno.ENAMETOOLONG: "use a shorter path",
}


def os_reason(err: OSError) -> str:
    """Why the OS refused (its own words) and what to do: 'No space left on device; free
    space on that disk'."""
    reason = err.strerror or str(err)
    hint = _OS_HINTS.get(err.errno) if err.errno is not None else None
    return f"{reason}; {hint}" if hint else reason


def umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open(path, "w")` gives a new file: 0666 minus the umask."""
    return 0o666 & ~umask()


def atomic_write(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to a temporary sibling, fsync, then rename over `path`.

    A failed write (a full disk, a file system turned read-only) leaves `path` as it was and
    raises WriteError naming it (a caller adds what was already written, and how to finish)."""
    path = Path(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), file_mode())  # mkstemp makes 0600
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:  # gone, or the file system refuses even that (read-only)
                pass
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            raise WriteError(f"cannot write {path}: {os_reason(err)}", err) from None
        raise


def output_path(text: str | os.PathLike[str], option: str = "--output") -> Path:
    """The directory a user named, as a Path; an empty name is refused (Path('') is the
    working directory: a run would write its files there)."""
    if isinstance(text, str) and not text.strip():
        raise OutputDirError(f"{option} is empty; name a directory (use . for the working "
                             "directory)")
    return Path(text)


def check_output_dir(path: str | os.PathLike[str], option: str = "--output") -> None:
    """Raise OutputDirError when `path` cannot become a run directory: it is empty, a file,
    it lies under a file, or its nearest existing directory is not writable. Writes nothing."""
    path = output_path(path, option)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{option} {path} is a file; it must be a directory (new or a run's)")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputDirError(f"{option} {path} lies under {existing}, which is a file; "
                             "choose a directory path")
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        what = "is" if existing == path else f"lies under {existing}, which is"
        reason = errno.EROFS if _read_only_fs(existing) else errno.EACCES
        raise OutputDirError(f"{option} {path} {what} not writable ({os.strerror(reason)}); "
                             "choose a directory you can write to")


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


class OutputLock:
    """An exclusive advisory lock on a run directory, for the life of a `with` block.

    Entering creates the directory (and missing parents) and locks DIR/.eager-eval.lock, or
    raises OutputInUseError at once when another process holds it, OutputDirError when the
    directory cannot be created.
    """

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None
        self._created: list[Path] = []

    def __enter__(self) -> "OutputLock":
        self._created = self._make_directories()
        try:
            self._fd = self._lock()
        except BaseException:
            self._remove_created_directories()
            raise
        try:  # the pid is for the message of a second run: a full disk may refuse it
            os.ftruncate(self._fd, 0)
            os.write(self._fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()  # before unlocking: a waiting opener re-checks the inode
        except OSError:  # gone, or a file system turned read-only: the lock dies with the fd
            pass
        os.close(self._fd)
        self._fd = None
        self._remove_created_directories()

    def _make_directories(self) -> list[Path]:
        missing = []
        directory = self.directory
        while not directory.exists() and directory.parent != directory:
            missing.append(directory)
            directory = directory.parent
        created = []
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:
                continue  # made by someone else meanwhile
            except OSError as err:
                self._created = created
                self._remove_created_directories()
                raise OutputDirError(f"cannot create output directory {self.directory}: "
                                     f"{err.strerror}") from None
            created.append(directory)
        return created

    def _lock(self) -> int:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError as err:
                raise OutputDirError(f"cannot write into output directory {self.directory}: "
                                     f"{err.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise OutputInUseError(self.directory, pid) from None
            if _same_file(fd, self.path):
                return fd
            os.close(fd)  # the holder removed the file after we opened it: lock the new one

    def _remove_created_directories(self) -> None:
        for directory in reversed(self._created):
            try:
                directory.rmdir()  # only if empty: a run that wrote something keeps it
            except OSError:
                break
        self._created = []


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)
