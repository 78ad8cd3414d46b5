"""Files of ours appear whole or not at all, and a file we cannot read is named.

A shared room (like ``_validation``): every writer of the package goes through
:func:`atomic_write` (a temporary file in the same folder, flushed to disk, then renamed over
the final name, so a full disk or a kill leaves the old file or none, never a partial one), and
every reader of a torch file through :func:`load_torch` (``weights_only=True``; an empty,
truncated or foreign file raises ``ValueError`` naming the path and what it should hold).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_write", "load_torch", "save_torch", "write_text"]


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On any error the temporary file is removed and nothing appears under ``path`` (an existing
    file there is kept); an ``OSError`` (a full disk, a read-only folder) is raised again with
    ``path`` named.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> with atomic_write(d / "x.txt") as tmp:
        ...     _ = tmp.write_text("whole")
        >>> (d / "x.txt").read_text(), sorted(p.name for p in d.iterdir())
        ('whole', ['x.txt'])
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise OSError(err.errno, f"Could not write {path}: {err.strerror or err}") from err
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the bytes are on disk before the rename makes them visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, f"Could not write {path}: {err.strerror or err}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` through :func:`atomic_write`."""
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """``Path(path).write_text(text)`` through :func:`atomic_write`."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def load_torch(
    path: str | Path, what: str, hint: str = "", map_location: Any = "cpu", mmap: bool = False
) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file.

    Args:
        path: the file.
        what: what it should hold, for the message (e.g. ``"a concept embeddings cache"``).
        hint: a sentence appended to the message (e.g. ``"Delete the folder to rebuild it."``).
        map_location: as in ``torch.load``.
        mmap: as in ``torch.load``: map the tensors instead of reading them (to look at a
            large file's metadata).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "empty.pt"
        >>> _ = p.write_bytes(b"")
        >>> load_torch(p, "a checkpoint")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected .../empty.pt to hold a checkpoint, but it could not be read (...).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Expected {what} at {path}, but there is no such file.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # empty, truncated, not a torch file, or a refused pickle
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"Expected {path} to hold {what}, but it could not be read ({message})."
            + (f" {hint}" if hint else "")
        ) from None
