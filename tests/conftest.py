import os
import tempfile

import pytest
import torch
from transformers import TrainerCallback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ["TRAINFORGE_HOME"] = tempfile.mkdtemp(prefix="trainforge-home-")  # the pickle signing key, not the user's

from trainforge.config import load_config
from trainforge.config.loader import merge


def tiny_run_config(runs_dir, **sections):
    """A seconds-long run on the tiny random LLaMA and the bundled dates task; sections override the defaults."""
    base = {
        "model": {"name": "tiny-llama"},
        "data": {"task": "dates-json", "task_size": 64, "split": {"train": 0.75, "validation": 0.125, "test": 0.125}},
        "method": {"name": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
        "training": {
            "max_steps": 8,
            "batch_size": 4,
            "learning_rate": 1e-2,
            "max_length": 96,
            "logging_steps": 1,
            "save_steps": 4,
            "lr_scheduler": "constant",
        },
        "evaluation": {"max_new_tokens": 4, "batch_size": 8, "max_samples": 4},
        "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
    }
    return load_config(base=merge(base, sections))


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


def train_losses(run):
    return [m["loss"] for m in run.metrics() if "loss" in m]


class FrozenWeightsWatch(TrainerCallback):
    """Snapshots every frozen parameter when training starts and compares at the end."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        after = dict(model.named_parameters())
        self.changed = [n for n, before in self.before.items() if not torch.equal(before, after[n].detach())]


class StopAtEpoch:
    """An epoch callback of the from-scratch engine that interrupts the run, as Ctrl-C would, at one epoch."""

    def __init__(self, epoch):
        self.epoch = epoch

    def __call__(self, epoch, row):
        if epoch == self.epoch:
            raise KeyboardInterrupt
