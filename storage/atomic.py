"""Atomic writes, defined once: a file is written under a hidden temporary name beside its destination, then
renamed over it, so a reader (or a crash at any instant) sees the whole old file or the whole new one; a folder
is written beside itself and swapped in. Leftover temporaries are named ``.<name>.<pid>.<random>.tmp``."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import pyarrow.fs as pafs


def temporary_name(name: str) -> str:
    """The hidden temporary name a file ``name`` is written under before its rename."""
    return f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any],
                 fs: pafs.FileSystem | None = None) -> None:
    """``write(stream)`` into a temporary file beside ``path``, then rename it over ``path``. Local files (no
    ``fs``) are flushed to disk before the rename; with a pyarrow file system ``fs`` (an object store, say) the
    rename is the file system's move. The temporary file is removed on any failure, which is raised."""
    if fs is None:
        target = Path(path)
        tmp = target.parent / temporary_name(target.name)
        try:
            with open(tmp, "wb") as sink:
                write(sink)
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return
    folder, name = str(path).rsplit("/", 1)
    tmp_path = f"{folder}/{temporary_name(name)}"
    try:
        with fs.open_output_stream(tmp_path) as stream:
            write(stream)
        fs.move(tmp_path, str(path))
    except BaseException:
        try:
            fs.delete_file(tmp_path)
        except OSError:
            pass
        raise


def replace_folder(folder: str | os.PathLike[str], files: Mapping[str, bytes]) -> None:
    """Write ``files`` (relative path -> bytes) into a new folder beside ``folder``, then swap it in place of
    ``folder``: the old folder stays whole until the swap, and is restored if the swap fails (OSError raised)."""
    folder = Path(folder)
    tag = uuid.uuid4().hex[:12]
    new, old = folder.parent / f".{folder.name}-{tag}.tmp", folder.parent / f".{folder.name}-{tag}.old"
    try:
        for name, data in files.items():
            (new / name).parent.mkdir(parents=True, exist_ok=True)
            (new / name).write_bytes(data)
        if folder.exists():
            os.replace(folder, old)
        os.replace(new, folder)
    except OSError:
        shutil.rmtree(new, ignore_errors=True)
        if old.exists() and not folder.exists():
            os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
