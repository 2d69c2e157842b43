"""Atomic, durable writes and safe reads of run-directory files.

Every file is written to a temporary name (``.<name>.<random>.tmp``) in the
same directory, fsynced, and moved into place with :func:`os.replace`; the
directory is fsynced after the move. A crash or a power loss leaves either the
old file or the new one, never half of one; a killed write leaves at most a
``.tmp`` file, which :func:`remove_temp_files` cleans on the next run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import torch

T = TypeVar("T")


class RunDirError(RuntimeError):
    """A run directory is missing, corrupt, or does not match the request."""


TEMP_SUFFIX = ".tmp"


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a directory's entries') data to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):  # file systems that cannot fsync a directory
            raise
    finally:
        os.close(fd)


def _atomic(path: str | Path, write: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
    try:
        write(tmp)
        fsync_path(tmp)  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except OSError as err:  # disk full, I/O error: say which file, whatever library raised it
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, os.strerror(err.errno) if err.errno else str(err), str(path)) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)  # the rename itself survives a power loss


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete the ``.*.tmp`` files that killed atomic writes left under ``folder``; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = [p for p in folder.rglob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _torch_save(obj: Any, tmp: str) -> None:
    # through a Python file, so that a full disk surfaces as the OSError it is (torch's own writer, or its
    # zip footer written while the OSError unwinds, would raise a RuntimeError instead)
    with open(tmp, "wb") as fh:
        try:
            torch.save(obj, fh)
        except RuntimeError as err:
            if isinstance(err.__context__, OSError):
                raise err.__context__ from None
            raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    _atomic(path, lambda tmp: _torch_save(obj, tmp))


def atomic_write_json(data: Any, path: str | Path) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True, default=str)))


def atomic_write_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    _atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def load_torch_object(path: str | Path, expected: type[T]) -> T:
    """Load a pickled object of type ``expected`` written by :func:`atomic_torch_save`."""
    try:
        obj = torch.load(path, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise RunDirError(f"checkpoint: {path} is corrupt or unreadable ({type(err).__name__})") from None
    if not isinstance(obj, expected):
        raise RunDirError(f"checkpoint: {path} holds a {type(obj).__name__}, expected {expected.__name__}")
    return obj


def read_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunDirError(f"{what}: {path} is missing or not valid JSON ({type(err).__name__})") from None


def read_metrics(path: str | Path) -> pd.DataFrame:
    """A run's ``metrics.parquet``, checked for its long-form columns; a one-line RunDirError otherwise."""
    from simulator.log.schema import METRIC_COLUMNS

    try:
        metrics = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - any read failure means a missing or corrupt file
        raise RunDirError(f"metrics: {path} is missing or corrupt ({type(err).__name__})") from None
    if list(metrics.columns) != METRIC_COLUMNS:
        raise RunDirError(f"metrics: {path} has columns {list(metrics.columns)}, expected {METRIC_COLUMNS}")
    return metrics
