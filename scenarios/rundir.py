"""The run directory: locked, verified, and never destroyed by mistake.

* A lock (``fcntl.flock`` on ``<run>/.lock``, released when the process ends)
  makes a second run, resume or ``--force`` on a directory in use refuse.
* ``manifest.json`` is the commit point: a checkpoint counts only once the
  manifest names it with its SHA-256 (scenario hash, agent, seed, round). A
  checkpoint is written under a new name (``<agent>__seed<s>__r<round>.pt``),
  then the manifest, then the previous file is removed, so a kill at any moment
  leaves a directory that ``--resume`` continues from.
* ``--resume`` verifies every checkpoint against the manifest before it
  changes anything; a failed resume leaves the directory as it was.
* ``--force`` replaces only a directory holding a cascadesim run, and only
  once the new run (written in a sibling temporary directory) has committed
  its first round: the two are then swapped and the old one deleted.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from simulator.checkpoint import RunDirError, atomic_write_json, fsync_path, read_json, remove_temp_files, sha256_file
from simulator.config import ConfigError

FORMAT = 2
KEEP_CHOICES = ("all", "last", "none")
_KEYS = ("scenario", "agents", "seeds", "rounds")


def scenario_hash(scenario_json: dict[str, Any]) -> str:
    """SHA-256 of the scenario's canonical JSON."""
    return hashlib.sha256(json.dumps(scenario_json, sort_keys=True).encode()).hexdigest()


def check_out_path(out: str | Path) -> Path:
    """Refuse an ``--out`` that cannot become a run directory, before anything is written."""
    if str(out).strip() == "":
        raise ConfigError("--out: must name a directory, got ''")
    path = Path(out).absolute()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out: {out} is a file, not a directory")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--out: {out} is under {parent}, which is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out: cannot write in {parent} (permission denied); choose a writable directory")
    return path


def checkpoint_name(agent: str, seed: int, r: int) -> str:
    """The file name of ``(agent, seed)``'s checkpoint after round ``r``."""
    return f"{agent}__seed{seed}__r{r:05d}.pt"


def _lock(folder: Path) -> int:
    """An exclusive, non-blocking lock on ``folder/.lock``; a one-line error if another run holds it."""
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        msg = f"--out: {folder} is in use by another cascadesim run (locked); wait for it to end or choose another --out"
        raise RunDirError(msg) from None
    return fd


def _entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name != ".lock"] if folder.is_dir() else []


def _holds_run(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "scenario" in manifest and "format" in manifest


def _check_replaceable(final: Path, out: str | Path, force: bool) -> None:
    """A new run goes into a missing or empty directory, or (``force``) one that holds a cascadesim run."""
    if _entries(final) and not force:
        raise RunDirError(f"--out: {out} already exists and is not empty; pass --resume to continue it or --force to replace it")
    if _entries(final) and not _holds_run(final):
        raise RunDirError(f"--force: {out} does not hold a cascadesim run (no manifest.json); refusing to replace it")


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories atomically (renameat2 RENAME_EXCHANGE), or by two renames where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    fn = getattr(libc, "renameat2", None)
    if fn is not None and fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return
    aside = a.with_name(a.name + ".swap")
    os.rename(a, aside)
    os.rename(b, a)
    os.rename(aside, b)


def remove_stale_siblings(final: Path) -> None:
    """Delete the temporary directories a killed ``--force`` left beside ``final`` (unlocked ones only)."""
    for stale in final.parent.glob(f".{final.name}.new-*"):
        try:
            fd = _lock(stale)
        except (RunDirError, OSError):
            continue  # a live run owns it
        shutil.rmtree(stale, ignore_errors=True)
        os.close(fd)


class RunDir:
    """A locked run directory and its manifest (see the module docstring).

    Attributes:
        final: where the run lives when done.
        path: where it is written now (a sibling temporary directory until a ``--force`` run swaps it in).
        manifest: the manifest as last committed.
    """

    def __init__(self, final: Path, path: Path, manifest: dict[str, Any], locks: list[int], keep: str, replaces: bool) -> None:
        self.final, self.path, self.manifest = final, path, manifest
        self._locks, self.keep, self._replaces = locks, keep, replaces

    # ----- opening ---------------------------------------------------------
    @classmethod
    def create(cls, manifest: dict[str, Any], out: str | Path, force: bool, keep: str = "last") -> RunDir:
        """A new run in ``out``: it must be missing or empty, or (``force``) hold a cascadesim run."""
        final = check_out_path(out)
        manifest = {**manifest, "format": FORMAT, "scenario_hash": scenario_hash(manifest["scenario"])}
        manifest.update(checkpoints={}, complete=False)
        _check_replaceable(final, out, force)
        locks: list[int] = []
        try:
            final.mkdir(parents=True, exist_ok=True)
            locks.append(_lock(final))
            _check_replaceable(final, out, force)  # again under the lock: another run may have started meanwhile
            if not _entries(final):
                run = cls(final, final, manifest, locks, keep, replaces=False)
            else:
                remove_stale_siblings(final)
                work = Path(tempfile.mkdtemp(prefix=f".{final.name}.new-", dir=final.parent))
                locks.append(_lock(work))
                run = cls(final, work, manifest, locks, keep, replaces=True)
            run.write_manifest()
        except BaseException as err:
            for fd in locks:
                os.close(fd)
            if isinstance(err, OSError):
                raise RunDirError(f"--out: cannot create the run directory {out} ({err.strerror or type(err).__name__})") from None
            raise
        return run

    @classmethod
    def resume(cls, manifest: dict[str, Any], out: str | Path, keep: str = "last") -> RunDir:
        """The interrupted run in ``out``, every checkpoint verified before anything is changed."""
        final = check_out_path(out)
        if not (final / "manifest.json").is_file():
            raise RunDirError(f"--resume: {out} holds no run (manifest.json missing)")
        old = read_json(final / "manifest.json", "manifest")
        if not isinstance(old, dict) or old.get("format") != FORMAT:
            fmt = old.get("format") if isinstance(old, dict) else "?"
            raise RunDirError(f"--resume: {out} was written by another cascadesim version (format {fmt}), without checksums; use --force")
        for key in _KEYS:
            if old.get(key) != manifest[key]:
                raise RunDirError(f"--resume: {out} was run with a different {key}; use a new --out or --force")
        run = cls(final, final, old, [_lock(final)], keep, replaces=False)
        try:
            run.verify(scenario_hash(manifest["scenario"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            run.close()
            raise RunDirError(f"manifest: {final / 'manifest.json'} is malformed (checkpoint entries); rerun with --force") from None
        except BaseException:
            run.close()
            raise
        run.clean()
        return run

    # ----- checkpoints -----------------------------------------------------
    def verify(self, expected_hash: str) -> None:
        """Check each checkpoint the manifest names: scenario hash, agent, seed and SHA-256 of its bytes."""
        if self.manifest.get("scenario_hash") != expected_hash:
            raise RunDirError(f"manifest: {self.final} records another scenario hash; use a new --out or --force")
        for key, entry in self.manifest.get("checkpoints", {}).items():
            path = self.path / "checkpoints" / entry["file"]
            ours = entry["agent"] in self.manifest["agents"] and entry["seed"] in self.manifest["seeds"]
            if key != f"{entry['agent']}__seed{entry['seed']}" or not ours:
                raise RunDirError(f"manifest: checkpoint entry {key} does not belong to this run")
            if entry.get("scenario_hash") != expected_hash:
                raise RunDirError(f"checkpoint: {path} was written for another scenario")
            if not path.is_file():
                raise RunDirError(f"checkpoint: {path} is missing; the run cannot be resumed (rerun with --force)")
            if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
                raise RunDirError(f"checkpoint: {path} is corrupt, truncated or replaced (SHA-256 differs from the manifest); use --force")

    def clean(self) -> None:
        """Remove what killed writes left: ``.tmp`` files and checkpoints the manifest does not name."""
        remove_temp_files(self.path)
        named = {e["file"] for e in self.manifest.get("checkpoints", {}).values()}
        folder = self.path / "checkpoints"
        if folder.is_dir() and self.keep != "all":
            for file in folder.glob("*.pt"):
                if file.name not in named:
                    file.unlink()
        remove_stale_siblings(self.final)

    def checkpoint(self, agent: str, seed: int) -> tuple[Path, int] | None:
        """``(file, round)`` of the committed checkpoint of ``(agent, seed)``, or None."""
        entry = self.manifest["checkpoints"].get(f"{agent}__seed{seed}")
        return None if entry is None else (self.path / "checkpoints" / entry["file"], int(entry["round"]))

    def commit(self, save: Any, agent: str, seed: int, r: int) -> None:
        """Write ``(agent, seed)``'s checkpoint of round ``r`` with ``save(path)``, then commit it in the manifest."""
        path = self.path / "checkpoints" / checkpoint_name(agent, seed, r)
        save(str(path))
        self.register(agent, seed, r)

    def register(self, agent: str, seed: int, r: int) -> None:
        """Commit the checkpoint file of ``(agent, seed)``'s round ``r``, already in ``checkpoints/``, in the manifest."""
        key = f"{agent}__seed{seed}"
        path = self.path / "checkpoints" / checkpoint_name(agent, seed, r)
        previous = self.manifest["checkpoints"].get(key)
        self.manifest["checkpoints"][key] = {
            "agent": agent,
            "seed": seed,
            "round": r,
            "file": path.name,
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
            "scenario_hash": self.manifest["scenario_hash"],
        }
        self.write_manifest()
        if previous is not None and previous["file"] != path.name and self.keep != "all":
            (self.path / "checkpoints" / previous["file"]).unlink(missing_ok=True)
        if self._replaces:
            self._swap()

    def finish(self) -> int:
        """Mark the run complete; with ``keep = none`` drop the checkpoints. Returns the bytes of checkpoints kept."""
        if self.keep == "none":
            shutil.rmtree(self.path / "checkpoints", ignore_errors=True)
            self.manifest["checkpoints"] = {}
        self.manifest["complete"] = True
        self.write_manifest()
        folder = self.path / "checkpoints"
        return sum(p.stat().st_size for p in folder.glob("*.pt")) if folder.is_dir() else 0

    # ----- manifest, swap, release ----------------------------------------------
    def write_manifest(self) -> None:
        atomic_write_json(self.manifest, self.path / "manifest.json")

    def _swap(self) -> None:
        """The new run has a committed round: it takes the place of the run it replaces, which is deleted."""
        _exchange(self.path, self.final)
        fsync_path(self.final.parent)
        shutil.rmtree(self.path)
        self.path, self._replaces = self.final, False

    def close(self) -> None:
        """Release the locks; an unfinished ``--force`` run is removed and the old run stays untouched."""
        if self._replaces:
            shutil.rmtree(self.path, ignore_errors=True)
        for fd in self._locks:
            os.close(fd)
        self._locks = []

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
