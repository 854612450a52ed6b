"""One writer at a time per results folder: a lock file that names its holder (host, process, start time).

The lock is ``<out>/.lock.json``, created exclusively (``O_EXCL`` on a local file system; on object stores,
which have no exclusive create, a best-effort check then write). A lock whose holder is a dead process on this
host (or whose process id now belongs to another process) is stale and is taken over, with a note; a live
holder, or one on another host, makes :meth:`FolderLock.acquire` raise :class:`LockedError` (or wait).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from storage.errors import InputError, environment_failure

LOCK_FILE = ".lock.json"


class LockedError(InputError):
    """The results folder is held by another run (exit code 2: nothing was written)."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock."""

    host: str
    pid: int
    process_start: str      # the process's start time (from /proc), to tell a reused process id apart
    since: str
    command: str

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), process_start(os.getpid()),
                   datetime.now(timezone.utc).isoformat(timespec="seconds"), " ".join(sys.argv)[:300])

    def describe(self) -> str:
        return f"process {self.pid} on host {self.host} (since {self.since}: {self.command})"


def process_start(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot ("" when unknown or not running)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def holder_alive(holder: Holder) -> bool | None:
    """True/False for a holder on this host; None when it runs elsewhere (cannot be checked from here)."""
    if holder.host != socket.gethostname():
        return None
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not holder.process_start or process_start(holder.pid) == holder.process_start


class FolderLock:
    """The lock of one results folder (``root`` on file system ``fs``)."""

    def __init__(self, fs: pafs.FileSystem, root: str) -> None:
        self.fs, self.path = fs, f"{root}/{LOCK_FILE}"
        self.held = False

    def read(self) -> Holder | None:
        """The current holder, or None when the folder is not locked (an unreadable lock counts as stale)."""
        try:
            with self.fs.open_input_stream(self.path) as stream:
                return Holder(**json.loads(stream.read()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            return Holder("?", -1, "", "", "unreadable lock file")

    def acquire(self, wait: bool = False, poll: float = 1.0) -> list[str]:
        """Take the lock; returns notes (a stale lock taken over). LockedError when held by a live run and not
        ``wait``ing; with ``wait``, poll until it is free."""
        notes: list[str] = []
        while True:
            if self._create():
                self.held = True
                return notes
            holder = self.read()
            if holder is None:
                continue
            alive = holder_alive(holder) if holder.host != "?" else False
            if alive is False:
                notes.append(f"took over the lock of {holder.describe()}, which is no longer running")
                self._delete()
                continue
            if not wait:
                where = "" if alive else " (on another host: biasgrid cannot tell whether it still runs)"
                raise LockedError(f"{self.path}: this results folder is being written by {holder.describe()}"
                                  f"{where}; wait for it (--wait), or use another --out. If that run is surely "
                                  f"gone, delete {self.path}")
            time.sleep(poll)

    def release(self) -> None:
        """Give the lock back (only when held by this process)."""
        if self.held:
            holder = self.read()
            if holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname():
                self._delete()
            self.held = False

    def _create(self) -> bool:
        data = json.dumps(asdict(Holder.me())).encode()
        if isinstance(self.fs, pafs.LocalFileSystem):
            folder = Path(self.path).parent
            made = not folder.exists()
            folder.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            except OSError as exc:
                self._undo(folder if made else None)
                raise environment_failure(self.path, exc) from None
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            except OSError as exc:   # a full disk: no half-written lock, no results folder made for it
                self._undo(folder if made else None)
                raise environment_failure(self.path, exc) from None
            return True
        if self.fs.get_file_info(self.path).type != pafs.FileType.NotFound:
            return False
        with self.fs.open_output_stream(self.path) as stream:
            stream.write(data)
        return True

    def _undo(self, folder: Path | None) -> None:
        """Remove the lock file this process failed to write, and ``folder`` when it made it (empty)."""
        Path(self.path).unlink(missing_ok=True)
        if folder is not None:
            try:
                folder.rmdir()
            except OSError:
                pass

    def _delete(self) -> None:
        try:
            self.fs.delete_file(self.path)
        except (FileNotFoundError, OSError):
            pass

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
