"""Runs launched from the dashboard: each is `python -m trainforge.cli train <config>` in the background, exactly
what a user would type. Its output goes to <runs_dir>/.ui/<name>.log until the run directory exists, then the
open log is moved into it as train.log (a rename: the process keeps writing to the same file)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from trainforge.config import RunConfig
from trainforge.config.loader import dump_config
from trainforge.tracking.rundir import STATUS_FILE, atomic_write_text

LOG_NAME = "train.log"


def default_name(config: RunConfig) -> str:
    kind = config.training.objective if config.task == "lm" else config.task
    return f"{config.method.name if config.task == 'lm' else config.model.name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass
class Launch:
    name: str
    run_path: Path
    log: Path
    process: subprocess.Popen
    started: float = field(default_factory=time.time)

    @property
    def returncode(self) -> int | None:
        return self.process.poll()


class Launcher:
    def __init__(self, runs_dir: Path):
        self.runs_dir = Path(runs_dir)
        self.staging = self.runs_dir / ".ui"
        self.launches: dict[str, Launch] = {}
        self.lock = threading.Lock()

    def launch(self, config: RunConfig) -> Launch:
        """Start training `config` (its name and runs_dir already set); returns at once."""
        from trainforge.errors import RunError

        with self.lock:
            if (self.runs_dir / config.name).exists() or config.name in self.launches:
                raise RunError(f"A run named {config.name!r} already exists under {self.runs_dir}/; pick another name.")
            self.staging.mkdir(parents=True, exist_ok=True)
            config_file = self.staging / f"{config.name}.yaml"
            atomic_write_text(config_file, dump_config(config))
            log = self.staging / f"{config.name}.log"
            with open(log, "wb") as out:
                process = subprocess.Popen([sys.executable, "-m", "trainforge.cli", "train", str(config_file)],
                                           stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
            launch = Launch(config.name, self.runs_dir / config.name, log, process)
            self.launches[config.name] = launch
        threading.Thread(target=self._move_log, args=(launch,), daemon=True).start()
        return launch

    def _move_log(self, launch: Launch) -> None:
        while True:
            done = launch.returncode is not None
            if (launch.run_path / STATUS_FILE).is_file():
                target = launch.run_path / LOG_NAME
                os.replace(launch.log, target)
                launch.log = target
                return
            if done:
                return  # it failed before creating its run directory: the log stays in the staging folder
            time.sleep(0.2)

    def log_of(self, name: str) -> Path | None:
        launch = self.launches.get(name)
        if launch:
            return launch.log
        for path in (self.runs_dir / name / LOG_NAME, self.staging / f"{name}.log"):
            if path.is_file():
                return path
        return None
