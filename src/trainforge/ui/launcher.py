"""Runs launched from the dashboard: each is `trainforge train <config>` in the background, exactly what a user
would type (started as `python -m trainforge`, so that SIGINT is heard). Its output goes to
<runs_dir>/.ui/<name>.log until the run directory exists, then the open log is moved into it as train.log (a
rename: the process keeps writing to the same file). A stage chain (`stages:`) keeps its log in the staging
folder: its stages are ordinary runs named `<name>-<stage>`. Stopping sends SIGINT to the run's process group, as
Ctrl-C does, so its last checkpoint stays resumable."""

from __future__ import annotations

import itertools
import os
import signal
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
STOP_GRACE_S = 60.0  # after SIGINT, how long a run may take to stop before it gets SIGTERM


def default_name(config: RunConfig) -> str:
    """The name `trainforge train` would give the run: its task's stem and the time."""
    from trainforge.run.directory import default_name as named
    from trainforge.tasks import registry

    return named(registry.for_config(config).stem(config))


@dataclass
class Launch:
    name: str
    run_path: Path
    log: Path
    process: subprocess.Popen
    stages: list[str] = field(default_factory=list)  # a chain's stage run names; empty for one run
    started: float = field(default_factory=time.time)
    stopped: bool = False

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def config_file(self) -> Path:
        return self.run_path.parent / ".ui" / f"{self.name}.yaml"

    @property
    def status(self) -> str:
        """The process's state, for a launch without a run directory of its own (yet)."""
        code = self.returncode
        if code is None:
            return "running" if self.stages else "starting"
        if self.stopped:
            return "interrupted"
        return "completed" if code == 0 else "failed"


class Launcher:
    def __init__(self, runs_dir: Path):
        self.runs_dir = Path(runs_dir)
        self.staging = self.runs_dir / ".ui"
        self.launches: dict[str, Launch] = {}
        self.lock = threading.Lock()

    def free_name(self, name: str) -> str:
        """`name`, else `name-2`, `-3`, ...: a generated name that a run or launch of the same second holds."""
        candidates = itertools.chain([name], (f"{name}-{i}" for i in itertools.count(2)))
        return next(n for n in candidates if not (self.runs_dir / n).exists() and n not in self.launches)

    def launch(self, config: RunConfig) -> Launch:
        """Start training `config` (its name and runs_dir already set); returns at once."""
        launch = self._start(config.name, dump_config(config), [])
        threading.Thread(target=self._move_log, args=(launch,), daemon=True).start()
        return launch

    def launch_chain(self, name: str, yaml_text: str, stages: list[str]) -> Launch:
        """Start a validated stage chain (`stages:` config text, runs_dir already set); returns at once."""
        return self._start(name, yaml_text, stages)

    def _start(self, name: str, yaml_text: str, stages: list[str]) -> Launch:
        from trainforge.errors import RunError

        with self.lock:
            for taken in (name, *stages):
                if (self.runs_dir / taken).exists() or taken in self.launches:
                    raise RunError(f"A run named {taken!r} already exists under {self.runs_dir}/; pick another name.")
            self.staging.mkdir(parents=True, exist_ok=True)
            config_file = self.staging / f"{name}.yaml"
            atomic_write_text(config_file, yaml_text)
            log = self.staging / f"{name}.log"
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "trainforge", "train", str(config_file)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    start_new_session=True,
                )
            launch = Launch(name, self.runs_dir / name, log, process, stages)
            self.launches[name] = launch
        return launch

    def stop(self, name: str) -> bool:
        """Ctrl-C for a launched run: SIGINT to its process group, SIGTERM if it has not ended after a grace
        period. False when it is not running."""
        launch = self.launches.get(name)
        if launch is None or launch.returncode is not None:
            return False
        launch.stopped = True
        os.killpg(launch.process.pid, signal.SIGINT)  # its own session (start_new_session): pgid == pid

        def escalate():
            try:
                launch.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(launch.process.pid, signal.SIGTERM)

        threading.Thread(target=escalate, daemon=True).start()
        return True

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
