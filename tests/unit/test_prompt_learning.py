"""Prefix tuning and prompt tuning on the tiny LLaMA: they train with the base frozen, evaluate and generate,
their adapter folder loads with plain peft, and merging refuses them (there are no weight deltas to merge)."""

import json

import pytest
import torch

from conftest import FrozenWeightsWatch, tiny_run_config
from trainforge.errors import ConfigError, RunError
from trainforge.pipeline import train


def _config(runs_dir, method, **sections):
    return tiny_run_config(
        runs_dir,
        method={"name": method, "virtual_tokens": {"num_virtual_tokens": 8}},
        training={"max_steps": 12, "learning_rate": 1e-1},
        evaluation={"generation": True, "before_after": True},
        **sections,
    )


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_virtual_token_methods_train_evaluate_and_reload(runs_dir, method):
    from peft import PeftModel

    from trainforge.inference import load_run_model
    from trainforge.inference.merge import merge_run
    from trainforge.models import load_causal_lm
    from trainforge.pipeline import evaluate_run

    watch = FrozenWeightsWatch()
    run = train(_config(runs_dir, method), callbacks=[watch])
    summary = json.loads(run.file("summary.json").read_text())
    assert summary["after.perplexity"] < summary["before.perplexity"], summary  # held-out loss fell
    assert 0 < summary["trainable_params"] < 5_000
    base_names = {n for n, _ in load_causal_lm("tiny-llama").named_parameters()}
    assert {n.split("base_model.", 1)[-1] for n in watch.before} >= base_names and watch.changed == []
    after = json.loads(run.file("eval_after.json").read_text())
    assert len(after["samples"]) == 4 and all("prediction" in s for s in after["samples"])

    ids = torch.tensor([[1, 415, 3113, 302, 28705, 28740, 28774, 28774, 28774]])
    with torch.no_grad():
        plain = PeftModel.from_pretrained(load_causal_lm("tiny-llama"), run.path / "adapter").eval()(ids).logits
        ours = load_run_model(run)[0](ids).logits
    assert torch.equal(plain, ours)
    assert evaluate_run(run)["perplexity"] == pytest.approx(summary["after.perplexity"], rel=1e-4)

    with pytest.raises(RunError, match=f"{'prefix' if method == 'prefix' else 'prompt'} tuning.*nothing to merge"):
        merge_run(run)
    if method == "prefix":  # the server relies on peft's generate, which decodes prefix-tuned models wrong
        from trainforge.serve import load_backend

        with pytest.raises(RunError, match="prefix-tuned"):
            load_backend(run)


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_generation_decodes_what_the_training_forward_predicts(method):
    """The evaluation's `generate` must give the tokens that the full forward, as in training, picks one at a time
    (peft's own `generate` does not for these methods), batched or not."""
    from trainforge.evaluation.lm import generate
    from trainforge.methods import get_method
    from trainforge.models import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    model = get_method(_config("unused", method)).prepare(load_causal_lm("tiny-llama")).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "prompt_encoder" in name:
                param.mul_(50)  # virtual tokens large enough to change every prediction of the random model
    tokenizer = load_tokenizer("tiny-llama")
    prompt = "The year 1999"
    seq = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    prompt_len = seq.shape[1]
    with torch.no_grad():
        for _ in range(10):
            seq = torch.cat([seq, model(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    expected = tokenizer.decode(seq[0, prompt_len:], skip_special_tokens=True).strip()
    assert generate(model, tokenizer, [prompt], max_new_tokens=10) == [expected]
    # batched with left padding, a prompt decodes as it does alone
    longer = "The museum opened in the year 1999 and"
    alone = generate(model, tokenizer, [longer], max_new_tokens=10)
    assert generate(model, tokenizer, [prompt, longer], max_new_tokens=10, batch_size=2) == [expected, *alone]


def test_merge_on_export_is_refused_before_the_run_starts(runs_dir):
    with pytest.raises(ConfigError, match="`export.merge`: method 'prompt'"):
        train(_config(runs_dir, "prompt", export={"merge": True}))
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
