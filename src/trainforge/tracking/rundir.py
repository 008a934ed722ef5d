"""The run directory: the unit of truth for a run. Every file is written atomically (temp file + rename)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from trainforge.errors import RunError

STATUS_FILE = "run.json"  # status: running | failed | completed; `runs list` reads it


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
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
    def create(cls, runs_dir: str | Path, name: str, config_yaml: str) -> "RunDir":
        run = cls(Path(runs_dir) / name)
        if run.path.exists():
            raise RunError(
                f"Run directory {run.path} already exists. Pick another `name`, or continue it with --resume."
            )
        run.path.mkdir(parents=True)
        atomic_write_text(run.file("config.yaml"), config_yaml)
        run.set_status("running", started=time.time())
        return run

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
        info = self.info()
        info.update(fields, status=status, updated=time.time())
        atomic_write_json(self.file(STATUS_FILE), info)

    @contextmanager
    def failing_on_error(self) -> Iterator["RunDir"]:
        """Mark the run failed, with the error, if the block raises; the error goes on to the caller."""
        try:
            yield self
        except BaseException as err:
            self.set_status("failed", error=f"{type(err).__name__}: {err}")
            raise

    @property
    def status(self) -> str:
        return self.info().get("status", "unknown")

    # content -------------------------------------------------------------------------------------------------
    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())

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

    def last_checkpoint(self) -> Path | None:
        """The newest complete checkpoint; Trainer writes `trainer_state.json` last, so its absence marks a half one."""
        if not self.checkpoints.is_dir():
            return None
        done = [p for p in self.checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
        return max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


def list_runs(runs_dir: str | Path) -> list[RunDir]:
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if p.is_dir() and (p / STATUS_FILE).is_file()]
    return sorted(runs, key=lambda r: r.info().get("started", 0))


def find_run(name_or_path: str, runs_dir: str | Path = "runs") -> RunDir:
    for candidate in (Path(name_or_path), Path(runs_dir) / name_or_path):
        if (candidate / STATUS_FILE).is_file():
            return RunDir(candidate)
    known = ", ".join(r.name for r in list_runs(runs_dir)[-10:]) or "none"
    raise RunError(f"No run {name_or_path!r} (looked for it as a path and under {runs_dir}/). Recent runs: {known}.")
