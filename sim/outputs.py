"""Results folders: checked before anything runs, and owned by one process at a time.

* :func:`check_writable` - an ``-o`` that is a file, sits under a file, or cannot be written (no
  permission, a read-only mount) is a one-line error before a command does any work.
* :class:`FolderLock` - a ``.chaossim.lock`` file in the folder, holding the owner's pid, locked
  with ``flock``. A second ``chaossim run`` or ``sweep`` on the same folder is refused, naming that
  pid. The kernel drops the lock when its owner dies, however it dies, so a lock file left by a
  killed process (a *stale* lock) is simply taken over; a lock file that was replaced while we
  waited is detected by its inode and tried again.
* :func:`claim_run_folder` - a run writes only into a new or empty folder: never over another run
  (whose replications a report would average with the new ones) or a sweep.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Self

from .loading import ScenarioError

LOCK_NAME = ".chaossim.lock"


class OutputError(ScenarioError):
    """An output folder that cannot be used; ``str()`` is the one-line message (exit code 2)."""


def check_writable(folder: Path, option: str = "-o") -> None:
    """Refuse a folder that is a file, lies under a file, or whose nearest existing ancestor is not writable."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {folder}: is a file, expected a folder")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {folder}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {folder}: {existing} is not writable (permissions or a read-only mount)")


def describe_contents(folder: Path) -> str | None:
    """What a folder holds, in a few words, or None when it is empty (a lock file aside)."""
    names = sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME) if folder.is_dir() else []
    if not names:
        return None
    if "sweep.json" in names or "rows" in names:
        return "a sweep (sweep.json, rows/)"
    if "summary.json" in names or "scenario.yaml" in names or any(n.startswith("rep-") for n in names):
        return "a run (scenario.yaml, summary.json, rep-*/)"
    return f"{len(names)} other file(s), e.g. {names[0]!r}"


def claim_run_folder(folder: Path) -> None:
    """Refuse to run into a folder that holds anything (call with the folder's lock held)."""
    held = describe_contents(folder)
    if held is not None:
        raise OutputError(f"-o {folder}: already holds {held}; a run writes only into a new or empty folder, choose another -o folder")


class FolderLock:
    """``with FolderLock(folder):`` - this process is the folder's only writer (creates the folder)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> Self:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.fd = self._acquire()
        except OSError as err:
            raise OutputError(f"-o {self.folder}: cannot be written ({err.strerror or err})") from None
        return self

    def _acquire(self) -> int:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputError(
                    f"{self.folder}: in use by another chaossim process (pid {owner}, lock {self.path}); "
                    "wait for it to finish or choose another -o folder"
                ) from None
            # the previous owner may have removed the file between our open and our lock
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            os.close(self.fd)
            self.fd = None


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a reader (or a kill) never meets a half-written file."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    except BaseException:  # a stop (SIGTERM, Ctrl-C) between the two leaves no stray .partial beside the file
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise

