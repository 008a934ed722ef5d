"""`trainforge tune` workers in separate processes (as on separate machines) share one PostgreSQL-backed Optuna
study: every grid point is tried once, no trial is lost or repeated. The test starts a throwaway PostgreSQL server
from Debian's packages (`.ci/run` installs them); it skips, saying why, where none can be started."""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import trainforge
from _classical import tabular_config
from trainforge.config import dump_config


def _pg_bin(tool: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return shutil.which(tool) or (found[-1] if found else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server in a temporary folder on a free 127.0.0.1 port; its URL. PostgreSQL refuses to run as
    root, so as root it runs as the `postgres` user the Debian package creates."""
    pytest.importorskip("psycopg2", reason="psycopg2 (the test extra) is not installed")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip(
            "no PostgreSQL server programs (initdb, pg_ctl): install Debian's `postgresql` package "
            "(.ci/run does) to run this test"
        )
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="trainforge-pg-"))  # not under pytest's tmp_path: root-only folders
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            pytest.skip("running as root and there is no `postgres` user to run the PostgreSQL server as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)

    try:
        steps = [
            (initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"),
            (
                pg_ctl,
                "-D",
                str(data),
                "-l",
                str(folder / "log"),
                "-w",
                "-t",
                "60",
                "start",
                "-o",
                f"-p {port} -h 127.0.0.1 -k {folder}",
            ),
        ]
        for cmd in steps:
            done = run(*cmd)
            if done.returncode:
                pytest.skip(
                    f"cannot start a PostgreSQL server: `{Path(cmd[0]).name}` failed: "
                    f"{(done.stderr or done.stdout).strip()[-500:]}"
                )
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_two_tune_processes_share_one_postgres_study(postgres_url, tmp_path):
    space = {
        "C": {"type": "float", "low": 0.001, "high": 1000, "log": True, "grid": [10.0**e for e in range(-3, 4)]},
        "preprocessing.scale": ["standard", "minmax", "robust"],
    }
    config = tabular_config(
        tmp_path / "runs",
        model={"name": "logistic_regression"},
        cv={"folds": 3},
        tuning={"strategy": "grid", "trials": 100, "space": space, "replace_space": True, "pruning": False},
    )
    (tmp_path / "tune.yaml").write_text(dump_config(config))
    src = str(Path(trainforge.__file__).parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    # two `trainforge tune` processes started together, as on two machines: distinct run names and worker indices
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trainforge.cli",
                "tune",
                "tune.yaml",
                f"name=worker{i}",
                "--storage",
                postgres_url,
                "--study",
                "shared",
                "--worker-index",
                str(i),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-2000:] for o in outputs)

    trials = optuna.load_study(study_name="shared", storage=postgres_url).get_trials()
    real = [t for t in trials if not t.user_attrs.get("skipped")]  # a late ask past the budget is marked skipped
    assert len(real) == 21  # the 7 x 3 grid, capped below the 100 asked for: none lost
    assert sorted(t.number for t in real) == list(range(21))
    assert all(t.state == TrialState.COMPLETE for t in real)
    combos = {(t.params["model.params.C"], t.params["preprocessing.scale"]) for t in real}
    assert len(combos) == 21  # none repeated
    hosts = {t.user_attrs["worker"].split("/")[0] for t in real}
    assert len(hosts) == 2, f"one process ran every trial: {hosts}"  # both processes took part
