"""The run directory: the unit of truth for a run. Every file is written atomically (temp file + rename)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from trainforge.errors import RunError, is_disk_full

STATUS_FILE = "run.json"  # status: running | failed | interrupted | completed; `runs list` reads it
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _abandoned_empty(folder: Path) -> bool:
    """An empty folder untouched for a minute: a process that made it died before writing into it (one that is
    starting writes within milliseconds)."""
    return not any(folder.iterdir()) and time.time() - folder.stat().st_mtime > 60


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is unusable (header unreadable, or shorter/longer than its header says), else None.
    Reads the header only."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        return f"{path.name} has no readable safetensors header"
    actual = path.stat().st_size
    if actual != 8 + size + end:
        return f"{path.name} holds {actual} bytes, its header says {8 + size + end}"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why a Trainer checkpoint cannot be resumed from (the Trainer writes files one by one, trainer_state.json
    last, so a crash or a full disk leaves half a checkpoint), else None."""
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "no readable trainer_state.json"
    weights = [folder / n for n in WEIGHT_FILES if (folder / n).is_file()]
    if not weights:
        return f"no model weights ({' / '.join(WEIGHT_FILES)})"
    for path in [*weights, *folder.glob("*.safetensors")]:
        if path.suffix == ".safetensors" and (problem := safetensors_problem(path)):
            return problem
    for path in folder.glob("*.pt"):  # optimizer / scheduler / RNG states: torch zip archives
        if not zipfile.is_zipfile(path):
            return f"{path.name} is cut short (not a complete torch archive)"
    return None


def shared_mode(directory: bool = False) -> int:
    """The mode `open()` / `mkdir()` give: 0o666 / 0o777 less the umask. tempfile makes its files and folders 0600 /
    0700 and safetensors writes 0600, which would keep artifacts from other users and the services that serve them;
    secrets (the signing key) are written 0600 on purpose, not through here."""
    try:  # Linux shows the umask without changing it (os.umask must set it to read it, racing other threads)
        status = Path("/proc/self/status").read_text()
        umask = next(int(line.split()[1], 8) for line in status.splitlines() if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def share_tree(folder: Path) -> None:
    """Widen `folder` and everything under it to `shared_mode` (never narrowing: an executable stays one)."""
    modes = {False: shared_mode(), True: shared_mode(directory=True)}
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | modes[path.is_dir()])


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, shared_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; it replaces `target` only if the block finishes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        share_tree(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.trackers = None  # tracking/trackers.Trackers, which run.directory starts for the run it opens

    def __getstate__(self) -> dict[str, Any]:
        """What another process gets (rank 0's run sent to the other ranks): the directory, not these trackers."""
        return {**self.__dict__, "trackers": None}

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def file(self, name: str) -> Path:
        return self.path / name

    # lifecycle -----------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, runs_dir: str | Path, name: str, config_yaml: str, kind: str | None = None, numbered: bool = False
    ) -> "RunDir":
        """A new run directory holding its config and `running` status (`kind`: what made the run, a task or tune /
        active), made whole in a hidden folder and renamed into place: of runs started together under one name,
        one gets it, and a kill leaves no half-made run. With `numbered` (a generated name) a taken name becomes
        `<name>-2`, `-3`, ... instead of an error; the caller writes the config again under the name given."""
        root = Path(runs_dir)
        for stale in root.glob(f".{name}.*"):  # made by a process killed before its run began
            if stale.is_dir() and (cls(stale).status == "interrupted" or _abandoned_empty(stale)):
                shutil.rmtree(stale, ignore_errors=True)
        try:
            root.mkdir(parents=True, exist_ok=True)
            staging = cls(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
            staging.path.chmod(shared_mode(directory=True))
            staging.set_status("running", started=time.time(), **({"kind": kind} if kind else {}))  # pid first
            atomic_write_text(staging.file("config.yaml"), config_yaml)
        except OSError as err:  # a read-only or full runs folder: say so before any work starts
            if "staging" in locals():
                shutil.rmtree(staging.path, ignore_errors=True)
            raise RunError(
                f"Cannot create run directory {root / name}: {err.strerror or err}. Make {root} writable (with "
                "free space), or set `tracking.runs_dir` elsewhere."
            ) from None
        for attempt in range(1, 10_000):
            run = cls(root / (name if attempt == 1 else f"{name}-{attempt}"))
            try:
                os.rename(staging.path, run.path)  # atomic; replaces only an empty folder (a kill before a run began)
                return run
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not numbered:
                    shutil.rmtree(staging.path, ignore_errors=True)
                    if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        raise RunError(
                            f"Run directory {run.path} already exists. Pick another `name`, or continue it with "
                            "--resume."
                        ) from None
                    raise RunError(f"Cannot create run directory {run.path}: {err.strerror or err}.") from None
        shutil.rmtree(staging.path, ignore_errors=True)
        raise RunError(f"Every numbered name {name}-N is taken under {root}; name the run.")

    def remove_leftovers(self) -> dict[Path, str]:
        """What a killed process left behind, each with why it went: half-written checkpoints, and the hidden temp
        files and folders of writes that never finished (each write goes to `.<name>.*` beside its target)."""
        removed = self.remove_partial_checkpoints()
        for temp in [*self.path.glob(".*.*"), *self.checkpoints.glob(".*.*")]:
            shutil.rmtree(temp, ignore_errors=True) if temp.is_dir() else temp.unlink(missing_ok=True)
            removed[temp] = "a write that never finished"
        return removed

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        run = cls(path)
        if not run.file(STATUS_FILE).is_file():
            raise RunError(f"{run.path} is not a trainforge run directory (no {STATUS_FILE}).")
        return run

    def info(self) -> dict[str, Any]:
        try:
            return read_json(self.file(STATUS_FILE))
        except (OSError, json.JSONDecodeError):
            return {}

    def set_status(self, status: str, **fields: Any) -> None:
        if status == "running":  # who runs it: a dead process on this host means the run was killed
            fields = {"pid": os.getpid(), "host": socket.gethostname(), **fields}
        self.record(**fields, status=status)

    def record(self, **fields: Any) -> None:
        """Add `fields` to run.json (its status unchanged unless one of them is `status`)."""
        info = self.info()
        info.update(fields, updated=time.time())
        atomic_write_json(self.file(STATUS_FILE), info)

    @contextmanager
    def failing_on_error(self) -> Iterator["RunDir"]:
        """Mark the run failed, with the error, if the block raises (interrupted, on Ctrl-C / SIGINT), and end its
        trackers so; the error goes on to the caller."""
        try:
            yield self
        except BaseException as err:
            if is_disk_full(err):
                self.remove_partial_checkpoints()
            status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
            self.record_end(status, f"{type(err).__name__}: {err}")
            if self.trackers is not None:
                self.trackers.close(status)
            raise

    def record_end(self, status: str, error: str) -> None:
        """The final status, even on a full disk: when a new temp file cannot be written, run.json is overwritten
        in place (its blocks are already there); when even that fails, the run reads `interrupted` later (its
        process is gone), and the caller's error is what the user sees."""
        try:
            self.set_status(status, error=error)
            return
        except OSError:
            pass
        info = {**self.info(), "status": status, "error": error, "updated": time.time()}
        try:
            with open(self.file(STATUS_FILE), "r+b") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(0)
                f.write(json.dumps(info, default=str).encode("utf-8").ljust(size))  # JSON allows trailing spaces
                f.truncate()
        except OSError as err:
            print(f"trainforge: could not record status {status!r} in {self.file(STATUS_FILE)}: {err}", file=sys.stderr)

    def remove_partial_checkpoints(self) -> dict[Path, str]:
        """Delete the checkpoints a crash or a full disk left half-written (never the complete ones); return each
        with what was wrong with it."""
        removed = {}
        if self.checkpoints.is_dir():
            for folder in sorted(self.checkpoints.glob("checkpoint-*")):
                if folder.is_dir() and (problem := checkpoint_problem(folder)):
                    shutil.rmtree(folder, ignore_errors=True)
                    removed[folder] = problem
        return removed

    @property
    def status(self) -> str:
        """As recorded, except a `running` run whose process on this host is gone reads `interrupted`."""
        info = self.info()
        status = info.get("status", "unknown")
        if (
            status == "running"
            and info.get("host") == socket.gethostname()
            and isinstance(info.get("pid"), int)
            and not _process_alive(info["pid"])
        ):
            return "interrupted"
        return status

    # content -------------------------------------------------------------------------------------------------
    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.trackers is not None:  # live: each tracker gets the row as it is written
            self.trackers.log(row)

    def rewind_metrics(self, step: int) -> None:
        """Drop metric rows logged after `step`: a resumed run logs those steps again from its checkpoint."""
        kept = [row for row in self.metrics() if row.get("step", 0) <= step]
        atomic_write_text(self.metrics_file, "".join(json.dumps(row, default=float) + "\n" for row in kept))

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.is_file():
            return []
        rows = []
        for line in self.metrics_file.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
        return rows

    def last_checkpoint(self, on_skip: Callable[[Path, str], None] | None = None) -> Path | None:
        """The newest complete checkpoint; newer incomplete ones are passed over, each reported to `on_skip`."""
        if not self.checkpoints.is_dir():
            return None
        found = [p for p in self.checkpoints.glob("checkpoint-*") if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit()]
        for folder in sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]), reverse=True):
            problem = checkpoint_problem(folder)
            if problem is None:
                return folder
            if on_skip:
                on_skip(folder, problem)
        return None


def list_runs(runs_dir: str | Path) -> list[RunDir]:
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    runs = [
        RunDir(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / STATUS_FILE).is_file()
    ]
    return sorted(runs, key=lambda r: r.info().get("started", 0))


def find_run(name_or_path: str, runs_dir: str | Path = "runs") -> RunDir:
    for candidate in (Path(name_or_path), Path(runs_dir) / name_or_path):
        if (candidate / STATUS_FILE).is_file():
            return RunDir(candidate)
    known = ", ".join(r.name for r in list_runs(runs_dir)[-10:]) or "none"
    raise RunError(f"No run {name_or_path!r} (looked for it as a path and under {runs_dir}/). Recent runs: {known}.")
