"""Every write a training run makes, as a place to inject a fault: the fault-injection tests patch one site in this
process (an OSError), or run this file as a training process that kills itself there (SIGKILL).

    python _fault_sites.py SITE CONFIG    # train CONFIG; SIGKILL at SITE
"""

import errno
import importlib
import os
import signal
import sys
from pathlib import Path

# site: (module, attribute, which call faults: a predicate on the call's arguments)
SITES = {
    "config": ("trainforge.tracking.rundir", "atomic_write_text", lambda path, *_: Path(path).name == "config.yaml"),
    "metrics": ("trainforge.tracking.rundir", "RunDir.append_metrics", lambda run, row: row.get("step") == 5),
    # the weights of checkpoint-4 are written, its optimizer state not yet
    "checkpoint": (
        "transformers",
        "Trainer._save_optimizer_and_scheduler",
        lambda trainer, *_: trainer.state.global_step == 4,
    ),
    "adapter": ("trainforge.methods.base", "Method.save", lambda *_: True),
    "summary": ("trainforge.run.finish", "atomic_write_json", lambda path, *_: Path(path).name == "summary.json"),
    "report": ("trainforge.tracking.report", "write_report", lambda *_, **__: True),
    "mlflow": ("trainforge.tracking.mlflow_log", "log_run", lambda *_, **__: True),
}


def disk_full() -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "(injected)")


def killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def inject(site: str, fault, set_attribute=setattr) -> None:
    """Patch SITES[site] so that its first matching call runs `fault` first (set_attribute: e.g. monkeypatch's)."""
    module, attribute, hits = SITES[site]
    owner = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    done = []

    def faulty(*args, **kwargs):
        if not done and hits(*args, **kwargs):
            done.append(True)
            fault()
        return original(*args, **kwargs)

    set_attribute(owner, name, faulty)


if __name__ == "__main__":
    from trainforge import cli

    inject(sys.argv[1], killed)
    sys.argv = ["trainforge", "train", sys.argv[2]]
    cli.main()
