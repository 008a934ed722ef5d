"""Preference objectives against TRL's own trainers. On one fixed batch of the bundled constrained-answers pairs, the
trainer trainforge builds from a run config (shared-prompt forward on) gives the loss and gradients of a plain TRL
trainer configured by hand, for every DPO loss type, a weighted combination, the dpo_sft_weight shorthand, ORPO,
SimPO, CPO and KTO. Then each objective trains on tiny-llama (KTO also from an unpaired file, its held-out rows
scored as the pairs they form), and the config refuses what a run would not use."""

import json
import types

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from conftest import tiny_run_config, train_losses
from trainforge.config import load_config
from trainforge.config.applies import applied_params
from trainforge.config.schema import DPO_LOSS_TYPES
from trainforge.data.tasks import constrained_answers
from trainforge.errors import ConfigError
from trainforge.methods import shared_prefix
from trainforge.methods.lm_trainer import build_lm_trainer
from trainforge.methods.preference import PAIR_KEYS, trainer_wraps_adapter
from trainforge.models.registry import resolve_model
from trainforge.pipeline import evaluate_run, train
from trainforge.tasks.lm.task import load_model, prepare

SMOOTHED = {"robust": 0.2, "exo_pair": 1e-3, "aot": 0.1, "aot_unpaired": 0.1}

# (objective, trainforge's training keys, the config TRL's trainer gets by hand); each DPO loss type on its own below
CASES = [
    (
        "dpo",
        {"beta": 0.3, "loss_type": ["sigmoid", "sppo_hard", "sft"], "loss_weights": [0.8, 0.2, 1.0]},
        {"loss_type": ["sigmoid", "sppo_hard", "sft"], "loss_weights": [0.8, 0.2, 1.0]},
    ),
    ("dpo", {"dpo_sft_weight": 0.5}, {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]}),
    ("orpo", {}, {}),
    ("simpo", {"simpo_gamma": 0.8}, {"loss_type": "simpo", "cpo_alpha": 0.0, "simpo_gamma": 0.8, "beta": 2.0}),
    ("simpo", {"label_smoothing": 0.1}, {"loss_type": "simpo", "cpo_alpha": 0.0, "label_smoothing": 0.1, "beta": 2.0}),
    ("cpo", {}, {"loss_type": "sigmoid", "cpo_alpha": 1.0}),
    ("cpo", {"loss_type": "ipo", "cpo_alpha": 0.5}, {"loss_type": "ipo", "cpo_alpha": 0.5}),
    ("cpo", {"loss_type": "hinge"}, {"loss_type": "hinge"}),
    ("kto", {}, {"loss_type": "kto"}),
    ("kto", {"kto_undesirable_weight": 1.5}, {"loss_type": "kto", "undesirable_weight": 1.5}),
    ("kto", {"loss_type": "apo_zero_unpaired"}, {"loss_type": "apo_zero_unpaired"}),
]
BATCH = 2  # pairs (KTO: rows) in the fixed batch: TRL's LM head kernel is slow on CPU


def _config(runs_dir, objective, data=None, **training):
    return tiny_run_config(
        runs_dir,
        data=data or {"task": "constrained-answers", "format": "preference", "task_size": 24},
        training={"objective": objective, "max_length": 96, "precision": "fp32", **training},
        evaluation={"before_after": False, "generation": False},
    )


def _trainforge_trainer(config, tmp_path):
    """The trainer a run of `config` trains with, built as `train` builds it."""
    prep = prepare(config)
    model = load_model(prep.config, prep)
    if not trainer_wraps_adapter(prep.config, prep.method):
        model = prep.method.prepare(model)
    return build_lm_trainer(model, prep, types.SimpleNamespace(checkpoints=tmp_path / "trainforge"), []), prep


def _trl_trainer(objective, trl_args: dict, prep, attention: str, tmp_path):
    """TRL's trainer for `objective`, set up by hand on the same pairs with the same adapter."""
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
    from trl.data_utils import unpair_preference_dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    trainers = {
        "dpo": (DPOConfig, DPOTrainer),
        "kto": (KTOConfig, KTOTrainer),
        "orpo": (ORPOConfig, ORPOTrainer),
        "simpo": (CPOConfig, CPOTrainer),
        "cpo": (CPOConfig, CPOTrainer),
    }
    config_class, trainer_class = trainers[objective]
    args = config_class(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=BATCH,
        max_length=96,
        report_to="none",
        use_cpu=True,
        bf16=False,
        **{"beta": prep.config.training.beta, **trl_args},
    )
    pairs = Dataset.from_list([{k: r[k] for k in PAIR_KEYS} for r in prep.train_rows])
    if objective == "kto":
        pairs = unpair_preference_dataset(pairs).shuffle(seed=0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-llama"), attn_implementation=attention)
    return trainer_class(
        model=model,
        args=args,
        train_dataset=pairs,
        processing_class=prep.tokenizer,
        peft_config=prep.method.peft_config(),
    )


def _loss_and_grads(trainer, batch):
    model = trainer.model.train()
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _trainer_pair(runs_dir, tmp_path, objective, training, trl_args):
    """trainforge's trainer from a run config and TRL's by hand, with the same adapter away from its start (B = 0
    would make the policy equal its reference), and a fixed batch of TRL's."""
    ours, prep = _trainforge_trainer(_config(runs_dir, objective, batch_size=BATCH, **training), tmp_path)
    attention = shared_prefix.unwrapped(ours.model).config._attn_implementation
    theirs = _trl_trainer(objective, trl_args, prep, attention, tmp_path)
    torch.manual_seed(0)
    lora = {n: p for n, p in ours.model.named_parameters() if "lora_" in n}
    their_params = dict(theirs.model.named_parameters())
    assert lora and set(lora) <= set(their_params)
    with torch.no_grad():
        for name, param in lora.items():
            param.normal_(0, 0.05)
            their_params[name].copy_(param)
    return ours, theirs, next(iter(theirs.get_train_dataloader()))


def _assert_same_loss_and_gradients(ours, theirs, batch, monkeypatch):
    shared_forwards = []
    real_layout = shared_prefix.pair_layout
    monkeypatch.setattr(shared_prefix, "pair_layout", lambda *a: shared_forwards.append(1) or real_layout(*a))
    loss, grads = _loss_and_grads(ours, batch)
    assert shared_forwards  # trainforge's forward ran: each prompt once, its chunked head
    shared_forwards.clear()
    expected, expected_grads = _loss_and_grads(theirs, batch)
    assert not shared_forwards
    assert loss == pytest.approx(expected, rel=1e-4) and expected != 0
    assert set(grads) == set(expected_grads)
    for name, grad in expected_grads.items():  # each gradient within 1e-3 of TRL's, relative to its norm
        assert torch.linalg.norm(grads[name] - grad) <= 1e-3 * torch.linalg.norm(grad), name
    assert any(g.abs().sum() > 0 for g in expected_grads.values())


@pytest.mark.parametrize("objective, training, trl_args", CASES, ids=lambda v: str(v) if isinstance(v, str) else None)
def test_loss_equals_trls_own_trainer_on_the_same_batch(runs_dir, tmp_path, monkeypatch, objective, training, trl_args):
    _assert_same_loss_and_gradients(*_trainer_pair(runs_dir, tmp_path, objective, training, trl_args), monkeypatch)


@pytest.fixture(scope="module")
def dpo_pair(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("dpo")
    return _trainer_pair(tmp_path / "runs", tmp_path, "dpo", {}, {})


@pytest.mark.parametrize("loss", DPO_LOSS_TYPES)
def test_every_dpo_loss_type_equals_trls_on_the_shared_forward(dpo_pair, monkeypatch, loss):
    """The loss types differ only in what TRL computes from the same log-probs: each is set on both trainers as
    DPOConfig(loss_type=[loss]) sets it."""
    ours, theirs, batch = dpo_pair
    for trainer in (ours, theirs):
        trainer.loss_types, trainer.loss_weights, trainer.label_smoothing = [loss], [1.0], SMOOTHED.get(loss, 0.0)
    _assert_same_loss_and_gradients(ours, theirs, batch, monkeypatch)


def _pairs_file(path, rows):
    path.write_text("".join(json.dumps({k: r[k] for k in (*PAIR_KEYS, "constraint")}) + "\n" for r in rows))
    return str(path)


def _unpaired_file(path, rows):
    """Each pair as TRL's unpaired rows: the chosen answer labelled true, the rejected one false."""
    lines = [
        json.dumps(
            {"prompt": r["prompt"], "completion": r[side], "label": side == "chosen", "constraint": r["constraint"]}
        )
        for r in rows
        for side in ("chosen", "rejected")
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize(
    "objective, training, layout",
    [
        ("dpo", {"loss_type": "ipo", "beta": 0.5}, "preference"),
        ("simpo", {}, "preference"),
        ("cpo", {}, "preference"),
        ("kto", {}, "preference"),
        ("kto", {}, "unpaired"),
    ],
    ids=["dpo-ipo", "simpo", "cpo", "kto-pairs", "kto-unpaired"],
)
def test_each_objective_trains_on_tiny_llama(runs_dir, tmp_path, objective, training, layout):
    """8 steps on 8 pairs; the held-out rows are the training pairs, so the margin measures what was learnt:
    log p(chosen) - log p(rejected) grows on them (scored from the unpaired rows as the pairs they form)."""
    rows = constrained_answers(8, seed=5)
    write = _unpaired_file if layout == "unpaired" else _pairs_file
    data = write(tmp_path / f"{layout}.jsonl", rows)
    config = tiny_run_config(
        runs_dir,
        data={"task": None, "train": data, "test": data, "format": layout},
        training={"objective": objective, "max_steps": 8, "learning_rate": 1e-2, "save_steps": 100, **training},
        evaluation={"max_samples": None, "generation": False},
    )
    run = train(config)
    losses = train_losses(run)
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses))), losses
    summary = json.loads(run.file("summary.json").read_text())
    assert summary["after.margin"] > summary["before.margin"] + 1.0, summary
    assert "train.rewards/margins" in summary
    if layout == "unpaired":
        reloaded = evaluate_run(run)  # `trainforge eval` re-pairs the unpaired rows too
        assert reloaded["margin"] == pytest.approx(summary["after.margin"], rel=1e-3)


def test_unpaired_rows_hold_out_the_pairs_they_were_split_from(runs_dir, tmp_path):
    """KTO on an unpaired file: the held-out rows are scored as the pairs they form (a prompt with a true and a false
    answer; a row without its counterpart is left out and said), fitted to max_length as the pairs themselves are."""
    rows = constrained_answers(10, seed=7)
    pairs, unpaired = _pairs_file(tmp_path / "pairs.jsonl", rows), _unpaired_file(tmp_path / "rows.jsonl", rows)
    lone = json.dumps({"prompt": "Say hi", "completion": "hi", "label": True})
    with open(unpaired, "a") as out:
        out.write(lone + "\n")

    def held_out(data, layout):
        files = {"task": None, "train": data, "test": data, "format": layout}
        prep = prepare(_config(runs_dir, "kto", data=files, max_length=64))  # short: prompts are cut
        return [{k: r[k] for k in PAIR_KEYS} for r in prep.heldout_rows], prep.report

    expected, _ = held_out(pairs, "preference")
    got, report = held_out(unpaired, "unpaired")
    assert len(expected) == 10 and got == expected
    assert report.truncated["prompt"]  # the rows' prompts were cut, each by its own answer's room
    assert any("21 unpaired rows scored as 10 pairs" in note and "other 1 rows" in note for note in report.notes)


def test_params_record_only_the_keys_the_objective_reads():
    keys = {
        objective: {k for k in applied_params(_config("runs", objective)) if k.startswith("training.")}
        for objective in ("dpo", "simpo", "kto")
    }
    assert {"training.beta", "training.loss_type", "training.dpo_sft_weight"} <= keys["dpo"]
    assert "training.simpo_gamma" in keys["simpo"] and "training.loss_type" not in keys["simpo"]
    assert "training.kto_desirable_weight" in keys["kto"] and "training.cpo_alpha" not in keys["kto"]
    sft = tiny_run_config("runs")
    assert not {"training.beta", "training.loss_type"} & set(applied_params(sft))
    assert _config("runs", "simpo").training.beta == 2.0  # the SimPO paper's, unless set


@pytest.mark.parametrize(
    "training, expected",
    [
        (
            {"objective": "sft", "simpo_gamma": 1.0},
            r"key `training.simpo_gamma` = 1.0 is read by task lm with objective simpo",
        ),
        ({"objective": "dpo", "loss_type": "kto"}, r"objective dpo takes one loss type, or a list of them, of sigmoid"),
        ({"objective": "cpo", "loss_type": ["ipo"]}, r"objective cpo takes one loss type of sigmoid, hinge, ipo"),
        ({"objective": "dpo", "loss_type": ["ipo", "sft"], "loss_weights": [1.0]}, r"one weight each"),
        ({"objective": "dpo", "loss_type": "ipo", "dpo_sft_weight": 1.0}, r"dpo_sft_weight w is shorthand"),
        ({"objective": "dpo", "loss_type": "robust"}, r"loss type robust needs `training.label_smoothing` > 0"),
        ({"objective": "dpo", "label_smoothing": 0.1}, r"`training.label_smoothing` = 0.1 is read by dpo loss types"),
        ({"objective": "kto", "batch_size": 1}, r"kto estimates its KL term .* `training.batch_size` >= 2"),
        ({"objective": "orpo", "cpo_alpha": 0.5}, r"`training.cpo_alpha` = 0.5 is read by task lm with objective cpo"),
    ],
)
def test_config_refuses_what_the_objective_does_not_use(training, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(base={"data": {"task": "constrained-answers"}, "training": training})


def test_kto_reads_pairs_and_unpaired_rows_other_objectives_pairs_only():
    bundled = load_config(base={"data": {"task": "constrained-answers"}, "training": {"objective": "kto"}})
    assert bundled.data.format == "preference"  # its pairs, split by TRL into labelled rows
    load_config(base={"data": {"path": "x.jsonl", "format": "unpaired"}, "training": {"objective": "kto"}})
    with pytest.raises(ConfigError, match=r"objective `simpo` and `data.format: unpaired` do not fit.*kto from"):
        load_config(base={"data": {"path": "x.jsonl", "format": "unpaired"}, "training": {"objective": "simpo"}})
