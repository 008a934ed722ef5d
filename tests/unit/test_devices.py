"""Where the from-scratch networks run: the GPU when torch sees one (decided in one place), with checkpoints and saved
networks as CPU tensors that load on either device. Runs on the CPU; nothing here needs a GPU."""

import pytest
import torch
from safetensors.torch import load_file

from conftest import StopAtEpoch
from trainforge import checkpoints, hardware
from trainforge.config import load_config
from trainforge.config.loader import merge
from trainforge.nn import models
from trainforge.pipeline import train


def nn_config(runs_dir, **sections):
    base = {
        "task": "classification",
        "model": {"name": "torch_mlp"},
        "name": "mlp",
        "data": {"dataset": "breast_cancer", "split": {"strategy": "stratified"}},
        "training": {"epochs": 3, "learning_rate": 3e-3},
        "nn": {"dropout": 0.2, "checkpoint_every": 1},
        "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
    }
    return load_config(base=merge(base, sections))


def tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tensors(v)


def test_the_device_is_cuda_exactly_when_torch_sees_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert hardware.pick_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.pick_device() == "cpu"
    assert hardware.choose().device == "cpu"


def test_to_device_moves_every_tensor_of_a_nested_batch_and_keeps_the_rest():
    batch = {"x": (torch.ones(2), [torch.zeros(3), 7]), "name": "a"}
    moved = hardware.to_device(batch, "meta")
    assert moved["name"] == "a" and moved["x"][1][1] == 7
    assert isinstance(moved["x"], tuple) and isinstance(moved["x"][1], list)
    assert all(t.is_meta for t in tensors(moved)) and len(list(tensors(moved))) == 2


def test_cpu_weights_are_copies():
    net = models.linear_stack([3, 2])
    saved = checkpoints.cpu_weights(net.state_dict())
    with torch.no_grad():
        net[0].weight.add_(1)
    assert not torch.equal(saved["0.weight"], net[0].weight)


def test_a_checkpoint_written_on_a_gpu_resumes_on_the_cpu(runs_dir, monkeypatch):
    """Checkpoints hold CPU tensors only; one whose tensors were saved from CUDA (tagged cuda:0, which torch.load
    refuses without a GPU unless mapped) still resumes here, to the weights of an uninterrupted run."""
    whole = train(nn_config(runs_dir / "a"))
    with pytest.raises(KeyboardInterrupt):
        train(nn_config(runs_dir / "b"), callbacks=[StopAtEpoch(2)])
    folder = max((runs_dir / "b" / "mlp" / "checkpoints").glob("checkpoint-*"), key=checkpoints.checkpoint_step)
    state = torch.load(folder / checkpoints.STATE_FILE, weights_only=True)
    weights = load_file(str(folder / checkpoints.WEIGHTS_FILE))
    assert all(t.device.type == "cpu" for t in [*tensors(state), *weights.values()])

    with monkeypatch.context() as m:  # write it back as a GPU run's torch.save would have tagged it
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(state, folder / checkpoints.STATE_FILE)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(folder / checkpoints.STATE_FILE, weights_only=True)
    resumed = train(nn_config(runs_dir / "b"), resume=True)
    a, b = (load_file(str(r.path / "model" / "model.safetensors")) for r in (whole, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    monkeypatch.setattr(models, "pick_device", lambda: "meta")  # a saved network goes where the decision says
    model, _ = models.load(resumed.path / "model")
    assert all(p.is_meta for p in model.parameters())
