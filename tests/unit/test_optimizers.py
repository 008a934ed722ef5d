"""`training.optimizer`: each trains a tiny full SFT (loss falls in 20 steps), resumes bit-exactly from its own
checkpointed state, and reports its state's bytes; the memory-saving ones keep less than AdamW. LoRA+ gives the B
matrices `ratio` × the learning rate; a schedule-free run evaluates and saves its evaluation weights."""

import json
import statistics

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from conftest import tiny_run_config, train_losses
from trainforge.config import load_config
from trainforge.errors import ConfigError
from trainforge.methods.training_args import MuonWithAdamW
from trainforge.pipeline import train
from trainforge.tracking.callbacks import StopAtStep

# learning rate, optimizer_args and the class the Trainer must build, for 20 steps of full SFT of tiny-llama
OPTIMIZERS = {
    "adamw": (1e-2, {}, "torch.optim.adamw.AdamW"),
    "adamw_8bit": (1e-2, {}, "bitsandbytes.optim.adamw.AdamW"),
    "adafactor": (1e-2, {}, "transformers.optimization.Adafactor"),
    "galore": (1e-2, {"rank": 4}, "galore_torch.adamw.AdamW"),  # rank < the tiny model's 64-wide matrices
    "apollo": (1e-2, {"rank": 4}, "apollo_torch.apollo.AdamW"),
    "muon": (1e-2, {}, "trainforge.methods.training_args.MuonWithAdamW"),
    "schedule_free": (1e-2, {}, "schedulefree.adamw_schedulefree.AdamWScheduleFree"),
    "sgd": (0.5, {}, "torch.optim.sgd.SGD"),
}
STEPS = 20
QUIET = {"before_after": False, "generation": False, "perplexity": False}


class OptimizerSeen(TrainerCallback):
    """The optimizer the Trainer built, under accelerate's wrapper."""

    def on_train_begin(self, args, state, control, optimizer=None, model=None, **kwargs):
        self.optimizer = optimizer.optimizer
        self.names = {id(p): n for n, p in model.named_parameters()}
        self.path = f"{type(self.optimizer).__module__}.{type(self.optimizer).__name__}"


def full_sft(runs_dir, name, optimizer, **training):
    lr, args, _ = OPTIMIZERS[optimizer]
    return tiny_run_config(
        runs_dir,
        name=name,
        method={"name": "full"},
        training={"batch_size": 2, "optimizer": optimizer, "optimizer_args": args, "learning_rate": lr, **training},
        evaluation=QUIET,
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted 20-step run of each optimizer, trained once for the tests that read it."""
    runs, runs_dir = {}, tmp_path_factory.mktemp("runs")

    def run_of(optimizer):
        if optimizer not in runs:
            seen = OptimizerSeen()
            config = full_sft(runs_dir, optimizer, optimizer, max_steps=STEPS, save_steps=STEPS)
            runs[optimizer] = train(config, callbacks=[seen]), seen
        return runs[optimizer]

    return run_of


def weights(run):
    return load_file(run.path / "model" / "model.safetensors")


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_the_optimizer_trains_and_the_loss_falls_in_20_steps(straight, optimizer):
    run, seen = straight(optimizer)
    assert seen.path == OPTIMIZERS[optimizer][2], f"{optimizer} trained with {seen.path}"
    losses = train_losses(run)
    assert len(losses) == STEPS
    assert statistics.mean(losses[-5:]) < 0.5 * losses[0], f"{optimizer}: {losses}"


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_resume_is_bit_exact_with_the_optimizers_state(runs_dir, optimizer):
    straight = train(full_sft(runs_dir, "straight", optimizer, max_steps=4, save_steps=2))
    interrupted = full_sft(runs_dir, "interrupted", optimizer, max_steps=4, save_steps=2)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, callbacks=[StopAtStep(3)])
    resumed = train(interrupted, resume=True)
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == [], f"{optimizer}: resumed weights differ"


def test_optimizer_state_bytes_are_reported_and_the_memory_savers_keep_less(straight):
    run, seen = straight("adamw")
    summary = json.loads((run.path / "summary.json").read_text())
    tensors = [p for group in seen.optimizer.param_groups for p in group["params"]]
    # AdamW: two fp32 moments per trained value and a 4-byte step count per tensor
    assert summary["optimizer_state_bytes"] == 8 * summary["trainable_params"] + 4 * len(tensors)
    adamw = summary["optimizer_state_bytes"]
    for optimizer in ("adamw_8bit", "adafactor", "galore", "apollo"):
        kept = json.loads((straight(optimizer)[0].path / "summary.json").read_text())["optimizer_state_bytes"]
        assert 0 < kept < adamw, f"{optimizer} keeps {kept} bytes, AdamW {adamw}"


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest(straight):
    _, seen = straight("muon")
    muon = {seen.names[id(p)] for g in seen.optimizer.muon.param_groups for p in g["params"]}
    adamw = {seen.names[id(p)] for g in seen.optimizer.adamw.param_groups for p in g["params"]}
    assert muon == {f"model.layers.{i}.{m}.weight" for i in range(2) for m in MATRICES}
    assert adamw == {"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{norm}.weight" for i in range(2) for norm in ("input_layernorm", "post_attention_layernorm")
    }
    assert seen.optimizer.muon.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"


MATRICES = [f"self_attn.{x}_proj" for x in "qkvo"] + [f"mlp.{x}_proj" for x in ("gate", "up", "down")]


def test_muon_with_adamw_steps_as_torch_muon_and_adamw_do_and_round_trips_its_state():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
    twin = [p.detach().clone().requires_grad_() for p in model.parameters()]
    matrices = [model[0].weight, model[2].weight]
    groups = [{"params": list(model.parameters()), "weight_decay": 0.1}]
    adamw_kwargs = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8}
    combined = MuonWithAdamW(groups, matrices, {"momentum": 0.9}, torch.optim.AdamW, adamw_kwargs)
    reference = [
        torch.optim.Muon([twin[0], twin[4]], lr=1e-2, weight_decay=0.1, momentum=0.9),
        torch.optim.AdamW([twin[1], twin[2], twin[3], twin[5]], weight_decay=0.1, **adamw_kwargs),
    ]
    data = torch.randn(4, 8)
    for step in range(3):
        for params in (list(model.parameters()), twin):
            for p in params:
                p.grad = None
            out = torch.func.functional_call(model, dict(zip(dict(model.named_parameters()), params)), (data,))
            out.square().mean().backward()
        combined.step()
        for optimizer in reference:
            optimizer.step()
        if step == 1:  # a checkpoint round trip: the inner optimizers must follow the loaded groups and state
            state = combined.state_dict()
            combined = MuonWithAdamW(groups, matrices, {"momentum": 0.9}, torch.optim.AdamW, adamw_kwargs)
            combined.load_state_dict(state)
            combined.param_groups[0]["lr"] = 5e-3  # as a scheduler would: Muon must see it
            reference[0].param_groups[0]["lr"] = 5e-3
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin, strict=True))


class WeightsSeen(TrainerCallback):
    """The weights while training (at each step's end, before a checkpoint switches them) and when evaluated."""

    def __init__(self):
        self.training, self.evaluated = {}, {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.training[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.evaluated[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()}


def test_schedule_free_evaluates_and_saves_its_evaluation_weights(runs_dir):
    seen = WeightsSeen()
    config = full_sft(runs_dir, "sf", "schedule_free", max_steps=4, save_steps=3, eval_steps=2)
    run = train(config, callbacks=[seen])
    assert sorted(seen.evaluated) == [2, 4]
    for step in (2, 4):  # the Trainer evaluates the optimizer's average, not the point it trains at
        assert any(not torch.equal(seen.training[step][n], w) for n, w in seen.evaluated[step].items())
    # step 3 saves without an evaluation: the checkpoint holds the evaluation point too, its optimizer says so
    checkpoint = run.path / "checkpoints" / "checkpoint-3"
    saved = load_file(checkpoint / "model.safetensors")
    assert any(not torch.equal(saved[n], seen.training[3][n]) for n in saved)
    groups = torch.load(checkpoint / "optimizer.pt", weights_only=True)["param_groups"]
    assert [g["train_mode"] for g in groups] == [False] * len(groups)
    final = weights(run)  # tied embeddings are saved once
    assert all(torch.equal(final[n], seen.evaluated[4][n]) for n in final), "the saved model is not the eval point"


def test_lora_plus_gives_the_b_matrices_ratio_times_the_learning_rate(runs_dir):
    seen, lr, ratio = OptimizerSeen(), 1e-3, 16.0
    before = WeightsSeen()
    config = tiny_run_config(
        runs_dir,
        name="loraplus",
        method={"lora": {"loraplus_lr_ratio": ratio}},
        training={"max_steps": 1, "learning_rate": lr},
        evaluation=QUIET,
    )
    run = train(config, callbacks=[seen, before])
    lrs = {seen.names[id(p)]: g["lr"] for g in seen.optimizer.param_groups for p in g["params"]}
    assert {n for n in lrs if "lora_B" in n} and all(lrs[n] == lr * ratio for n in lrs if "lora_B" in n)
    assert {n for n in lrs if "lora_A" in n} and all(lrs[n] == lr for n in lrs if "lora_A" in n)
    assert seen.path == "torch.optim.adamw.AdamW" and seen.optimizer.param_groups[0]["fused"]
    # B starts at zero, and Adam's first step moves each value by its learning rate: here ratio × lr
    adapter = load_file(run.path / "adapter" / "adapter_model.safetensors")
    moved = max(w.abs().max().item() for n, w in adapter.items() if "lora_B" in n)
    assert moved == pytest.approx(lr * ratio, rel=1e-3)


@pytest.mark.parametrize("optimizer", ["adamw_8bit", "adafactor", "schedule_free", "sgd"])
def test_lora_plus_composes_with_the_optimizer(runs_dir, optimizer):
    seen = OptimizerSeen()
    config = tiny_run_config(
        runs_dir,
        method={"lora": {"loraplus_lr_ratio": 4.0}},
        training={"max_steps": 1, "learning_rate": 1e-3, "optimizer": optimizer},
        evaluation=QUIET,
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[seen, StopAtStep(0)])
    assert seen.path == OPTIMIZERS[optimizer][2]
    lrs = {seen.names[id(p)]: g["lr"] for g in seen.optimizer.param_groups for p in g["params"]}
    assert all(lrs[n] == (4e-3 if "lora_B" in n else 1e-3) for n in lrs if "lora_" in n)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"training": {"optimizer_args": {"rank": 8}}}, r"optimizer_args.rank`: optimizer adamw does not read it"),
        ({"training": {"optimizer": "galore", "optimizer_args": {"rank": "x"}}}, r"optimizer_args.rank` = 'x'"),
        ({"training": {"optimizer": "galore"}}, r"method 'lora' trains small added ones"),
        ({"method": {"name": "full"}, "training": {"optimizer": "apollo", "weight_decay": 0.1}}, r"weight_decay"),
        ({"training": {"optimizer": "schedule_free", "lr_scheduler": "cosine"}}, r"schedule_free needs no schedule"),
        ({"training": {"optimizer": "schedule_free", "warmup_ratio": 0.1}}, r"give the warmup in steps"),
        ({"method": {"lora": {"loraplus_lr_ratio": 4}}, "training": {"optimizer": "muon"}}, r"LoRA\+.*muon"),
        (
            {"training": {"objective": "grpo", "optimizer": "muon"}, "reward": {"function": "a.b:c"}},
            r"TRL's grpo trainer builds only",
        ),
    ],
)
def test_options_no_run_would_read_are_refused(runs_dir, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_run_config(runs_dir, **overrides)


@pytest.mark.parametrize(
    "base",
    [
        {"task": "classification", "data": {"dataset": "iris"}},
        {"data": {"task": "dates"}, "training": {"objective": "ppo"}, "reward": {"function": "a.b:c"}},
    ],
    ids=["tabular", "ppo"],
)
def test_an_optimizer_is_refused_where_the_run_trains_its_own_loop(base):
    base = {**base, "training": {**base.get("training", {}), "optimizer": "sgd"}}
    with pytest.raises(ConfigError, match=r"training.optimizer` is read by the runs transformers' Trainer trains"):
        load_config(base=base)


def test_schedule_free_runs_without_a_decay_schedule():
    def scheduler(**training):
        return load_config(base={"data": {"task": "dates"}, "training": training}).training.lr_scheduler

    assert scheduler(optimizer="schedule_free") == "constant" and scheduler() == "cosine"
