"""Adapter merging shown on two tasks: two LoRA adapters of SmolLM2-135M-Instruct, each trained on one bundled task
(A: dates-json, dates in free text → JSON; B: constrained-answers as SFT, profile questions answered under a
checkable constraint), merged by `trainforge merge`'s function with several methods and weights, and every model
scored on both tasks' held-out rows the same way (`trainforge eval`'s generation scores: greedy answers, exact
match; task B also the share of answers meeting their constraint).

    PYTHONPATH=src python benchmarks/merge_adapters.py [--steps 30] [--merges ties:1,1 cat:0.5,0.5 ...]
        [--runs-dir DIR]   # trains the two adapters there, or reuses them when a run before trained them there
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"A": "dates-json", "B": "constrained-answers"}
MERGES = ["ties:1,1", "cat:0.5,0.5", "cat:1,1", "linear:0.5,0.5", "dare_ties:1,1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps of each adapter (batch 8)")
    parser.add_argument("--samples", type=int, default=32, help="held-out rows scored per task")
    parser.add_argument(
        "--merges", nargs="+", default=MERGES, help="METHOD:WA,WB[:DENSITY] each (density: ties / dare, default 0.5)"
    )
    parser.add_argument("--runs-dir", default=None, help="where the adapters are trained (or found trained)")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()

    from trainforge.config import load_config
    from trainforge.inference import load_run_model
    from trainforge.inference.adapter_merge import merge_adapters
    from trainforge.models import load_language_model
    from trainforge.pipeline import train
    from trainforge.tasks.lm.task import evaluate_lm, prepare
    from trainforge.tracking.rundir import RunDir

    started, console = time.time(), Console(width=120)
    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="merge-adapters-"))
    configs = {
        task: load_config(
            ROOT / "examples" / "lora-sft.yaml",
            [
                f"name={name}",
                f"data.task={name}",
                "data.task_size=400",
                "data.split={train: 0.8, validation: 0.1, test: 0.1}",
                f"training.max_steps={args.steps}",
                "training.save_steps=1000",
                "evaluation.before_after=false",
                "evaluation.perplexity=false",
                "evaluation.generation=false",  # scored below, every model the same way
                "evaluation.metrics=[exact_match]",
                f"evaluation.max_samples={args.samples}",
                "evaluation.max_new_tokens=32",
                f"tracking.runs_dir={runs_dir}",
                "tracking.mlflow=false",
                "tracking.report=false",
            ],
        )
        for task, name in TASKS.items()
    }
    runs = {}
    for task, config in configs.items():
        found = runs_dir / config.name
        reuse = (found / "run.json").is_file() and RunDir(found).status == "completed"
        console.print(f"task {task}: {'reusing' if reuse else 'training'} {found}")
        runs[task] = RunDir(found) if reuse else train(config)
    trained = time.time()

    merged, merges_dir = {}, Path(tempfile.mkdtemp(prefix="merges-", dir=runs_dir))
    for spec in args.merges:
        method, weights, *density = spec.split(":")
        out = merges_dir / f"{method}-{weights.replace(',', '_')}"
        weights = [float(w) for w in weights.split(",")]
        merged[spec] = merge_adapters(
            [runs["A"], runs["B"]], out, method, weights, float(density[0]) if density else None
        )
    merged_at = time.time()

    # generation on: the held-out rows scored as `trainforge eval` scores them
    preps = {
        task: prepare(
            config.model_copy(update={"evaluation": config.evaluation.model_copy(update={"generation": True})})
        )
        for task, config in configs.items()
    }
    models = {
        "base": lambda: load_language_model(configs["A"].model.name, "sft").eval(),
        "adapter A (dates-json)": lambda: load_run_model(runs["A"])[0],
        "adapter B (constrained-answers)": lambda: load_run_model(runs["B"])[0],
        **{f"merged {spec}": (lambda run=run: load_run_model(run)[0]) for spec, run in merged.items()},
    }
    rows = []
    for label, load in models.items():
        model = load()
        scores = {task: evaluate_lm(model, prep, label)[0] for task, prep in preps.items()}
        rows.append(
            {
                "model": label,
                "A_exact_match": scores["A"]["exact_match"],
                "B_exact_match": scores["B"]["exact_match"],
                "B_constraint_rate": scores["B"]["constraint_rate"],
            }
        )
    done = time.time()

    table = Table(title=f"SmolLM2-135M-Instruct, {args.steps} LoRA steps per task, {args.samples} held-out rows each")
    for column in ("model", "A dates-json: exact match", "B constrained-answers: exact match", "B: constraint met"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["model"], *(f"{row[k]:.3f}" for k in ("A_exact_match", "B_exact_match", "B_constraint_rate")))
    console.print(table)
    timing = {"train_s": trained - started, "merge_s": merged_at - trained, "eval_s": done - merged_at}
    console.print(", ".join(f"{k} {v:.0f}" for k, v in timing.items()) + f", total {done - started:.0f} s")
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "seconds": timing}, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
