"""Each LM method trains a tiny LLaMA: the loss falls, frozen weights stay bit-identical, artifacts load."""

import pytest
import torch

from conftest import FrozenWeightsWatch, tiny_run_config, train_losses
from trainforge.pipeline import train


def _loss_fell(run, factor):
    losses = train_losses(run)
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < factor * first, f"loss {first:.3f} → {last:.3f}"


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_adapter_methods_train_only_the_adapter(runs_dir, method):
    watch = FrozenWeightsWatch()
    config = tiny_run_config(runs_dir, method={"name": method}, training={"max_steps": 12})
    run = train(config, callbacks=[watch])
    _loss_fell(run, 0.9)
    assert len(watch.before) > 0 and watch.changed == []
    adapter = run.path / "adapter" / "adapter_model.safetensors"
    assert adapter.is_file() and adapter.stat().st_size < 200_000  # r=4 on a tiny model: tens of kB
    summary = run.info()
    assert summary["status"] == "completed"


def test_full_fine_tuning_changes_every_weight_matrix(runs_dir):
    from transformers import AutoModelForCausalLM

    from trainforge.models import resolve_model

    run = train(tiny_run_config(runs_dir, method={"name": "full"}, training={"learning_rate": 3e-3}))
    _loss_fell(run, 0.8)
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-llama"))
    tuned = AutoModelForCausalLM.from_pretrained(run.path / "model")
    changed = [n for n, p in tuned.named_parameters() if not torch.equal(p, base.state_dict()[n])]
    assert len(changed) == len(list(base.named_parameters()))


def test_adapter_loads_with_peft_and_merges_for_transformers(runs_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainforge.inference.merge import merge_run
    from trainforge.models import load_causal_lm

    run = train(tiny_run_config(runs_dir, training={"max_steps": 4}))
    ids = torch.tensor([[1, 520, 9531, 198, 4093]])
    base = load_causal_lm("tiny-llama")
    base_logits = base(ids).logits
    peft_model = PeftModel.from_pretrained(load_causal_lm("tiny-llama"), run.path / "adapter").eval()
    adapted = peft_model(ids).logits
    assert not torch.allclose(adapted, base_logits)  # the adapter learned something
    merged_dir = merge_run(run)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert torch.allclose(merged(ids).logits, adapted, atol=1e-4)


def test_clm_with_packing_trains_and_eval_loss_falls(runs_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(f'{{"text": "The river {i} flows north past the mill and the old bridge."}}\n' for i in range(80))
    )
    config = tiny_run_config(
        runs_dir,
        data={"task": None, "path": str(corpus), "format": "text"},
        training={"objective": "clm", "max_length": 32, "max_steps": 10, "packing": True, "eval_steps": 2},
    )
    run = train(config)
    _loss_fell(run, 0.9)
    evals = [m["eval_loss"] for m in run.metrics() if "eval_loss" in m]
    assert len(evals) >= 4 and evals[-1] < evals[0]
    assert run.info()["status"] == "completed"


def test_packed_rows_stay_rows_with_the_loss_of_examples_alone():
    """Packing for eager / SDPA attention: each packed row stays a row (not one batch-long row, whose attention
    square is batch² times a row's), and its loss is that of its examples trained alone: no attention across them."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from trainforge.methods.lm_trainer import keep_packed_rows_apart
    from trainforge.methods.shared_prefix import chunked_causal_lm_loss
    from trainforge.models import load_causal_lm

    torch.manual_seed(0)
    model = load_causal_lm("tiny-llama").eval()
    examples = [torch.randint(3, 200, (n,)).tolist() for n in (7, 5, 9, 4)]
    rows = [
        {"input_ids": examples[0] + examples[1], "seq_lengths": [7, 5]},
        {"input_ids": examples[2] + examples[3], "seq_lengths": [9, 4]},
    ]
    collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)  # what TRL's packing sets up
    keep_packed_rows_apart(collator)
    batch = collator(rows)
    assert batch["input_ids"].shape == (2, 13) and "attention_mask" not in batch
    assert batch["position_ids"].tolist() == [[*range(7), *range(5), 0], [*range(9), *range(4)]]

    def nll_sum(ids):  # summed next-token loss of one example alone
        ids = torch.tensor([ids])
        return chunked_causal_lm_loss(model, {"input_ids": ids, "labels": ids}) * (ids.size(1) - 1)

    with torch.no_grad():
        packed = chunked_causal_lm_loss(model, batch)
        alone = sum(nll_sum(ids) for ids in examples) / sum(len(ids) - 1 for ids in examples)
        leaky = dict(batch, position_ids=torch.arange(13).expand(2, 13))  # one sequence per row: attends across
        assert not torch.allclose(chunked_causal_lm_loss(model, leaky), alone, atol=1e-3)
    assert torch.allclose(packed, alone, atol=1e-5)


def test_early_stopping_ends_the_run_after_patience_evaluations(runs_dir):
    # A threshold no change can beat: every evaluation after the first counts as "no improvement".
    config = tiny_run_config(
        runs_dir, training={"max_steps": 40, "eval_steps": 2, "early_stopping": {"patience": 2, "threshold": 1e9}}
    )
    run = train(config)
    last_step = max(m["step"] for m in run.metrics())
    assert last_step <= 8, last_step
    assert run.info()["status"] == "completed"


def test_unknown_target_module_is_refused_before_the_run_directory_exists(runs_dir):
    from trainforge.errors import ConfigError
    from trainforge.run.prepare import resolve_run

    config = tiny_run_config(runs_dir, method={"name": "lora", "lora": {"target_modules": ["q_prj"]}})
    with pytest.raises(ConfigError, match=r"method.lora.target_modules.*'q_prj'.*named: .*q_proj"):
        train(config)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
    ia3 = config.model_copy(update={"task": "text-classification"})
    ia3.method.name, ia3.method.ia3.target_modules = "ia3", ["k_prj"]
    with pytest.raises(ConfigError, match=r"method.ia3.target_modules.*'k_prj'"):
        resolve_run(ia3)
    ia3.method.ia3.target_modules = ["k_proj", "down_proj"]
    ia3.method.ia3.feedforward_modules = ["down_proj"]
    resolve_run(ia3)  # names that exist pass
