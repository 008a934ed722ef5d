"""Half-written checkpoints are skipped on resume; resource faults (full disk, unwritable run directory, out of
memory, a broken model file) end as one clear error, exit code 2, no traceback, the last checkpoint intact."""

import errno
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import Trainer

from conftest import tiny_run_config
from trainforge import cli
from trainforge.config import dump_config
from trainforge.errors import ModelError, RunError
from trainforge.models.loading import load_causal_lm
from trainforge.models.registry import resolve_model
from trainforge.pipeline import train
from trainforge.tracking.callbacks import StopAtStep
from trainforge.tracking.rundir import RunDir, checkpoint_problem


def _checkpoint(folder, step):
    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.ones(64)}, ckpt / "adapter_model.safetensors")
    torch.save({"state": torch.zeros(64)}, ckpt / "optimizer.pt")
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "damage",
    ["no trainer_state.json", "truncated weights", "no weights", "truncated optimizer", "corrupt trainer_state.json"],
)
def test_last_checkpoint_skips_a_damaged_newest_one_and_names_it(tmp_path, damage):
    run = RunDir(tmp_path / "run")
    _checkpoint(run.checkpoints, 2)
    newest = _checkpoint(run.checkpoints, 4)
    {
        "no trainer_state.json": lambda: (newest / "trainer_state.json").unlink(),
        "truncated weights": lambda: _truncate(newest / "adapter_model.safetensors"),
        "no weights": lambda: (newest / "adapter_model.safetensors").unlink(),
        "truncated optimizer": lambda: _truncate(newest / "optimizer.pt"),
        "corrupt trainer_state.json": lambda: (newest / "trainer_state.json").write_text('{"global_st'),
    }[damage]()
    skipped = []
    assert run.last_checkpoint(on_skip=lambda folder, why: skipped.append((folder.name, why))).name == "checkpoint-2"
    assert [name for name, _ in skipped] == ["checkpoint-4"] and checkpoint_problem(newest) == skipped[0][1]
    assert checkpoint_problem(run.checkpoints / "checkpoint-2") is None


def test_resume_falls_back_from_a_truncated_checkpoint_with_a_warning(runs_dir, capfd):
    config = tiny_run_config(
        runs_dir,
        name="cut",
        training={"max_steps": 8, "save_steps": 2},
        evaluation={"before_after": False, "generation": False},
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[StopAtStep(7)])
    ckpts = runs_dir / "cut" / "checkpoints"
    _truncate(ckpts / "checkpoint-6" / "adapter_model.safetensors")
    capfd.readouterr()
    run = train(config, resume=True)
    err = capfd.readouterr().err.replace("\n", " ")
    assert "checkpoint-6 is incomplete" in err and "adapter_model.safetensors" in err
    assert "resuming from" in err and "checkpoint-4" in err
    assert run.status == "completed" and [m["step"] for m in run.metrics() if "loss" in m] == list(range(1, 9))


def _cli_main(monkeypatch, capfd, *args):
    monkeypatch.setattr(sys, "argv", ["trainforge", *args])
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    return exit_.value.code, capfd.readouterr().err


def _config_file(tmp_path, runs_dir, name, **sections):
    cfg = tmp_path / f"{name}.yaml"
    base = {"training": {"max_steps": 8, "save_steps": 2}, "evaluation": {"before_after": False, "generation": False}}
    cfg.write_text(dump_config(tiny_run_config(runs_dir, name=name, **{**base, **sections})))
    return cfg


@pytest.mark.parametrize("code, expected", [(errno.ENOSPC, "Out of disk space"), (errno.EACCES, "is not writable")])
def test_write_fault_during_a_checkpoint_is_one_error_and_keeps_the_previous_checkpoint(
    runs_dir, tmp_path, monkeypatch, capfd, code, expected
):
    save = Trainer._save_optimizer_and_scheduler

    def failing_save(self, output_dir):  # the weights of checkpoint-4 are written, then the disk fills up
        if self.state.global_step >= 4:
            raise OSError(code, os.strerror(code), os.path.join(output_dir, "optimizer.pt"))
        return save(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", failing_save)
    status, err = _cli_main(monkeypatch, capfd, "train", str(_config_file(tmp_path, runs_dir, "full")))
    assert status == 2 and "Traceback" not in err
    flat = " ".join(err.split())
    assert expected in flat and "checkpoint-2" in flat and "--resume" in flat
    run = RunDir(runs_dir / "full")
    assert run.status == "failed" and expected in run.info()["error"]
    assert run.last_checkpoint().name == "checkpoint-2"
    if code == errno.ENOSPC:  # the half-written checkpoint would keep the disk full
        assert not (run.checkpoints / "checkpoint-4").exists() and "checkpoint-4 was removed" in flat
    else:
        assert checkpoint_problem(run.checkpoints / "checkpoint-4")


def test_out_of_memory_says_to_lower_the_batch_size(runs_dir, tmp_path, monkeypatch, capfd):
    step = Trainer.training_step

    def oom(self, *args, **kwargs):
        if self.state.global_step >= 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 96.00 GiB")
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", oom)
    status, err = _cli_main(monkeypatch, capfd, "train", str(_config_file(tmp_path, runs_dir, "big")))
    flat = " ".join(err.split())
    assert status == 2 and "Traceback" not in err and "Out of memory" in flat
    assert "training.batch_size" in flat and "gradient_accumulation_steps" in flat and "checkpoint-2" in flat
    assert RunDir(runs_dir / "big").last_checkpoint().name == "checkpoint-2"


def test_unwritable_runs_folder_is_one_error(runs_dir, tmp_path, monkeypatch, capfd):
    runs_dir.mkdir(parents=True)
    runs_dir.chmod(0o555)
    if os.access(runs_dir, os.W_OK):  # root ignores the mode bits: make the write itself fail instead
        mkdir = Path.mkdir

        def refuse(self, *args, **kwargs):
            if self.is_relative_to(runs_dir):
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", refuse)
    try:
        status, err = _cli_main(monkeypatch, capfd, "train", str(_config_file(tmp_path, runs_dir, "ro")))
    finally:
        runs_dir.chmod(0o755)
    flat = " ".join(err.split())
    refused = "Cannot create run directory" in flat or "Cannot write the prepared data" in flat
    assert status == 2 and "Traceback" not in err and refused and str(runs_dir) in flat and "writable" in flat


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_broken_local_model_file_is_a_model_error_naming_it(tmp_path, damage):
    folder = tmp_path / "model"
    shutil.copytree(resolve_model("tiny-llama"), folder)
    weights = folder / "model.safetensors"
    _truncate(weights) if damage == "truncated" else weights.unlink()
    with pytest.raises(ModelError) as err:
        load_causal_lm(str(folder))
    assert str(folder) in str(err.value)
    if damage == "truncated":
        assert "model.safetensors is corrupt or cut short" in str(err.value)


def test_resume_refuses_a_run_whose_process_is_alive(runs_dir):
    config = tiny_run_config(runs_dir, name="busy")
    run = RunDir.create(runs_dir, "busy", dump_config(config))
    info = run.info()
    info["pid"] = os.getppid()  # a live process that is not this one
    (run.path / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunError, match="still running"):
        train(config, resume=True)


def test_full_disk_while_saving_a_tabular_model_is_one_error(runs_dir, tmp_path, monkeypatch, capfd):
    from _classical import tabular_config
    from trainforge.classical import artifacts

    def full_disk(pipeline, folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "model.skops"))

    monkeypatch.setattr(artifacts, "save_model", full_disk)
    cfg = tmp_path / "tab.yaml"
    cfg.write_text(dump_config(tabular_config(runs_dir, name="tab")))
    status, err = _cli_main(monkeypatch, capfd, "train", str(cfg))
    flat = " ".join(err.split())
    assert status == 2 and "Traceback" not in err and "Out of disk space" in flat and "train the run again" in flat
    assert "model.skops" in err.replace("\n", "")  # the path, however the console wrapped it
    assert RunDir(runs_dir / "tab").status == "failed"


def test_out_of_memory_in_an_rl_run_is_one_error(runs_dir, tmp_path, monkeypatch, capfd):
    from test_rl import rl_config

    from trainforge.tasks.lm import ppo

    def oom(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 96000000000 bytes.")

    monkeypatch.setattr(ppo, "train_ppo", oom)
    cfg = tmp_path / "rl.yaml"
    cfg.write_text(
        dump_config(rl_config(runs_dir, "ppo", evaluation={"before_after": False}).model_copy(update={"name": "rl"}))
    )
    status, err = _cli_main(monkeypatch, capfd, "train", str(cfg))
    flat = " ".join(err.split())
    assert status == 2 and "Traceback" not in err and "Out of memory" in flat and "training.batch_size" in flat
    assert RunDir(runs_dir / "rl").status == "failed"
