"""trainforge merge: LoRA adapters of several runs combined by peft's add_weighted_adapter into a run that eval,
predict, serve and export take. The merged update is checked against the sources' own factors."""

import json
import math
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import tiny_run_config
from trainforge.cli import app
from trainforge.errors import RunError
from trainforge.inference import load_run_model
from trainforge.inference.adapter_merge import merge_adapters
from trainforge.models import load_language_model
from trainforge.pipeline import train
from trainforge.tracking.rundir import RunDir

QUICK = {"max_steps": 3, "save_steps": 3}
NO_BASELINE = {"before_after": False, "max_samples": 2}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny LoRA runs: a (dates-json, r 4), b (constrained-answers, r 4), c (dates-json, r 8, another seed)."""
    runs_dir = tmp_path_factory.mktemp("merge") / "runs"
    made = {
        "a": train(tiny_run_config(runs_dir, name="a", training=QUICK, evaluation=NO_BASELINE)),
        "b": train(
            tiny_run_config(
                runs_dir, name="b", data={"task": "constrained-answers"}, training=QUICK, evaluation=NO_BASELINE
            )
        ),
        "c": train(
            tiny_run_config(
                runs_dir,
                name="c",
                method={"lora": {"r": 8, "alpha": 8}},
                training={**QUICK, "seed": 7},
                evaluation=NO_BASELINE,
            )
        ),
    }
    return runs_dir, made


def factors(run: RunDir) -> dict:
    """{module: (A, B, scaling)} read from the saved adapter files, not through peft."""
    config = json.loads((run.path / "adapter" / "adapter_config.json").read_text())
    tensors = load_file(run.path / "adapter" / "adapter_model.safetensors")
    scaling = config["lora_alpha"] / (math.sqrt(config["r"]) if config["use_rslora"] else config["r"])
    return {
        key.removeprefix("base_model.model.").removesuffix(".lora_A.weight"): (
            a,
            tensors[key.replace("lora_A", "lora_B")],
            scaling,
        )
        for key, a in tensors.items()
        if key.endswith("lora_A.weight")
    }


def effective_deltas(run: RunDir) -> dict:
    """Merged weight − base weight of every weight the run's adapter changes, folded into its base by peft."""
    base = load_language_model("tiny-llama", "sft").state_dict()
    merged = load_run_model(run)[0].merge_and_unload().state_dict()
    deltas = {name.removesuffix(".weight"): merged[name] - base[name] for name in base}
    return {name: delta for name, delta in deltas.items() if delta.abs().max() > 0}


def test_cat_is_exactly_the_weighted_sum_and_linear_mixes_the_factors(runs, tmp_path):
    _, made = runs
    a, b, c = (factors(made[n]) for n in "abc")
    cat = effective_deltas(merge_adapters([made["a"], made["c"]], tmp_path / "cat", "cat", [0.7, 0.3]))
    linear = effective_deltas(merge_adapters([made["a"], made["b"]], tmp_path / "linear", "linear", [0.7, 0.3]))
    assert set(cat) == set(a) and set(linear) == set(a)  # every targeted layer, nothing else
    for module in a:
        (a_a, b_a, s_a), (a_b, b_b, s_b), (a_c, b_c, s_c) = a[module], b[module], c[module]
        exact = 0.7 * s_a * b_a @ a_a + 0.3 * s_c * b_c @ a_c  # ranks 4 and 8: cat stacks them, rank 12
        torch.testing.assert_close(cat[module], exact, atol=1e-6, rtol=1e-4)
        # peft's linear weighs each factor by sqrt(weight · scaling) and multiplies the sums: cross terms included
        ka, kb = math.sqrt(0.7 * s_a), math.sqrt(0.3 * s_b)
        torch.testing.assert_close(linear[module], (ka * b_a + kb * b_b) @ (ka * a_a + kb * a_b), atol=1e-6, rtol=1e-4)
        weighted_sum = 0.7 * s_a * b_a @ a_a + 0.3 * s_b * b_b @ a_b
        assert (linear[module] - weighted_sum).abs().max() > 0.1 * weighted_sum.abs().max() > 0
    assert json.loads((tmp_path / "cat" / "adapter" / "adapter_config.json").read_text())["r"] == 12


def test_one_adapter_at_weight_one_reproduces_its_logits_rslora_too(runs, tmp_path):
    _, made = runs
    rslora = copy_run(made["a"], tmp_path / "a-rslora", adapter={"use_rslora": True})
    ids = torch.tensor([[1, 450, 2635, 338, 5490, 29871, 29896, 29929]])
    logits = {}
    for source in (made["a"], rslora):
        merged = merge_adapters([source], tmp_path / f"one-{source.name}", "linear", [1.0])
        with torch.no_grad():
            want, got = (load_run_model(run)[0](input_ids=ids).logits for run in (source, merged))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        logits[source.name] = want
    # rsLoRA scales by alpha / sqrt(r): a different model, which peft alone would merge at sqrt(r) times its update
    assert (logits["a"] - logits["a-rslora"]).abs().max() > 1e-3


def test_ties_density_and_weights_reach_peft_and_dare_repeats(runs, tmp_path):
    from peft.utils.merge_utils import ties

    _, made = runs
    merged = merge_adapters([made["a"], made["b"]], tmp_path / "ties", "ties", [0.7, 0.3], density=0.4)
    record = json.loads(merged.file("summary.json").read_text())["merged_from"]
    assert (record["method"], record["density"], [s["weight"] for s in record["sources"]]) == ("ties", 0.4, [0.7, 0.3])
    module = "model.layers.0.self_attn.q_proj"
    (a_a, _, s_a), (a_b, _, s_b) = factors(made["a"])[module], factors(made["b"])[module]
    expected = ties([a_a, a_b], torch.tensor([math.sqrt(0.7 * s_a), math.sqrt(0.3 * s_b)]), 0.4, "total")
    torch.testing.assert_close(factors(merged)[module][0], expected)
    dare = [merge_adapters([made["a"], made["b"]], tmp_path / f"dare{i}", "dare_ties") for i in (1, 2)]
    first, second = (load_file(run.path / "adapter" / "adapter_model.safetensors") for run in dare)
    assert all(torch.equal(first[k], second[k]) for k in first)  # DARE's random drops are seeded
    assert json.loads(dare[0].file("summary.json").read_text())["merged_from"]["density"] == 0.5


def test_the_merged_run_works_with_eval_predict_export_and_serve(runs, tmp_path):
    from transformers import AutoModelForCausalLM

    from trainforge.inference.backends import Sampling
    from trainforge.serve import load_backend

    runs_dir, _ = runs
    out = tmp_path / "merged"
    cli = CliRunner()
    done = cli.invoke(app, ["merge", "a", "b", "--weights", "0.6;0.4", "--out", str(out), "--runs-dir", str(runs_dir)])
    assert "expected numbers separated by commas" in str(done.exception) and not out.exists()
    done = cli.invoke(app, ["merge", "a", "b", "--weights", "0.6,0.4", "--out", str(out), "--runs-dir", str(runs_dir)])
    assert done.exit_code == 0, done.output
    assert "ties merge, rank 4" in done.output and "density 0.5" in done.output and "constrained-answers" in done.output
    run = RunDir.open(out)
    assert run.status == "completed" and yaml.safe_load(run.file("config.yaml").read_text())["method"]["name"] == "lora"

    done = cli.invoke(app, ["eval", str(out)])
    assert done.exit_code == 0, done.output
    assert "perplexity" in done.output and "exact_match" in done.output
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Extract the date: May 3, 2001"}\n{"prompt": "Hello"}\n')
    done = cli.invoke(app, ["predict", str(out), "--data", str(prompts), "--max-new-tokens", "3"])
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in prompts.with_suffix(".predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(r["prediction"], str) for r in rows)

    done = cli.invoke(app, ["export", str(out), "--merge"])
    assert done.exit_code == 0, done.output
    ids = torch.tensor([[1, 450, 2635, 338, 5490]])
    with torch.no_grad():
        folded = AutoModelForCausalLM.from_pretrained(out / "merged")(input_ids=ids).logits
        adapter = load_run_model(run)[0](input_ids=ids).logits
    torch.testing.assert_close(folded, adapter, atol=1e-5, rtol=1e-5)
    card = (out / "merged" / "README.md").read_text()
    assert "## Merged from" in card and "combination `ties`, rank 4, density 0.5" in card
    assert "| a | 0.6 | 4 |" in card and "| b | 0.4 | 4 |" in card

    backend = load_backend(run)
    completion = backend.complete(backend.encode("The date is"), Sampling(max_tokens=3))
    assert completion.completion_tokens > 0


def copy_run(run: RunDir, target, adapter=None, config=None, status=None) -> RunDir:
    """A copy of `run` with fields of its adapter_config.json / config.yaml / run.json changed."""
    shutil.copytree(run.path, target)
    for name, changes, load, dump in (
        ("adapter/adapter_config.json", adapter, json.loads, json.dumps),
        ("config.yaml", config, yaml.safe_load, yaml.safe_dump),
        ("run.json", status and {"status": status}, json.loads, json.dumps),
    ):
        if changes:
            path = target / name
            data = load(path.read_text())
            for key, value in changes.items():  # "model.name": nested keys
                *parents, last = key.split(".")
                node = data
                for parent in parents:
                    node = node[parent]
                node[last] = value
            path.write_text(dump(data))
    return RunDir(target)


@pytest.mark.parametrize(
    "change, says",
    [
        ({"adapter": {"peft_type": "PREFIX_TUNING"}}, "trained a PREFIX_TUNING adapter"),
        ({"adapter": {"use_dora": True}}, "DoRA"),
        ({"adapter": {"init_lora_weights": "pissa"}}, "initialized LoRA with pissa"),
        ({"config": {"model.name": "smollm2-135m-instruct"}}, "different base models"),
        ({"status": "failed"}, "is failed, not completed"),
    ],
)
def test_adapters_that_cannot_combine_are_refused_naming_the_run(runs, tmp_path, change, says):
    _, made = runs
    odd = copy_run(made["b"], tmp_path / "odd", **change)
    with pytest.raises(RunError, match=says) as err:
        merge_adapters([made["a"], odd], tmp_path / "out")
    assert str(odd.path) in str(err.value) and not (tmp_path / "out").exists()


def test_options_that_do_not_fit_are_refused(runs, tmp_path):
    _, made = runs
    a, b, c = made["a"], made["b"], made["c"]
    refused = {
        "need one rank": lambda: merge_adapters([a, c], tmp_path / "x", "linear"),
        "2 weight\\(s\\) for 3 run\\(s\\)": lambda: merge_adapters([a, b, c], tmp_path / "x", "svd", [0.5, 0.5]),
        "not used by --method cat": lambda: merge_adapters([a, b], tmp_path / "x", "cat", density=0.5),
        "in \\(0, 1\\]": lambda: merge_adapters([a, b], tmp_path / "x", "ties", density=1.5),
        "expected one of cat, linear": lambda: merge_adapters([a, b], tmp_path / "x", "average"),
        "Merging one run": lambda: merge_adapters([a], tmp_path / "x", "ties"),
        "already exists": lambda: merge_adapters([a, b], a.path.parent, "cat"),
        "becomes the merged run's name": lambda: merge_adapters([a, b], tmp_path / "x,y", "cat"),
    }
    for says, call in refused.items():
        with pytest.raises(RunError, match=says):
            call()
    with pytest.raises(RunError, match=f"{c.path} r=8"):
        merge_adapters([a, c], tmp_path / "x", "dare_ties")
    whole = copy_run(b, tmp_path / "whole")
    (whole.path / "adapter").rename(whole.path / "model")
    with pytest.raises(RunError, match="saved no adapter/"):
        merge_adapters([a, whole], tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x,y").exists()
