"""Parameter-efficient and transfer methods side by side, same task and budget: trainable parameters, peak resident
memory, train time and held-out score of each.

Text classification: every method of the `examples/textcls-*.yaml` configs on MiniLM (bundled support-ticket
topics), with one data set, epoch budget, batch size and sequence limit; each keeps its example's learning rate.
With --generative also LoRA, prefix and prompt tuning of SmolLM2-135M-Instruct on the bundled dates → JSON task
(same number of optimizer steps; scored by exact match). Each method runs in its own process, so peak memory is
that method's own.

    PYTHONPATH=src python benchmarks/peft_methods.py [--generative] [--epochs 2] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIERS = ["full", "lora", "ia3", "adapter", "feature-extraction", "embeddings-logreg"]
GENERATORS = ["lora", "prefix", "prompt"]


def _child(config_file: str, overrides: list[str]) -> None:
    """Run one training in this process and print its summary with the process's peak resident memory."""
    from trainforge.stages import train_from_file
    from trainforge.tracking.rundir import read_json

    run = train_from_file(config_file, overrides)
    summary = read_json(run.file("summary.json"))
    summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: kB
    print("RESULT " + json.dumps(summary))


def _run(config_file: Path, overrides: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", str(config_file), *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{config_file.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return _child(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--generative", action="store_true", help="also LoRA / prefix / prompt tuning of SmolLM2")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per generative method")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()

    runs_dir = tempfile.mkdtemp(prefix="peft-methods-")
    common = [f"tracking.runs_dir={runs_dir}", "tracking.mlflow=false", "tracking.report=false"]
    rows = []
    for method in CLASSIFIERS:
        budget = [
            "data.task=support-tickets",
            "data.task_size=800",
            f"training.epochs={args.epochs}",
            "training.batch_size=16",
            "training.max_length=64",
            "evaluation.before_after=false",
        ]
        result = _run(ROOT / "examples" / f"textcls-{method}.yaml", [*budget, *common, f"name=bench-{method}"])
        rows.append(
            {
                "task": "text-classification (MiniLM)",
                "method": method,
                "score": result["after.accuracy"],
                "metric": "accuracy",
                **_costs(result),
            }
        )
        Console().print(rows[-1])
    if args.generative:
        for method in GENERATORS:
            budget = [
                "data.task=dates-json",
                "data.task_size=400",
                f"training.max_steps={args.steps}",
                "training.batch_size=8",
                "training.max_length=256",
                "evaluation.before_after=false",
                "evaluation.max_samples=40",
                "evaluation.perplexity=false",
                "evaluation.metrics=[exact_match]",
            ]
            config = ROOT / "examples" / f"{method}-sft.yaml"
            result = _run(config, [*budget, *common, f"name=bench-gen-{method}"])
            rows.append(
                {
                    "task": "SFT dates→JSON (SmolLM2)",
                    "method": method,
                    "score": result["after.exact_match"],
                    "metric": "exact match",
                    **_costs(result),
                }
            )
            Console().print(rows[-1])

    table = Table(title=f"methods, same task and budget ({args.epochs:g} epochs / {args.steps} steps)")
    for column in ("task", "method", "trainable params", "% of model", "peak RSS (MB)", "train s", "score"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["task"],
            row["method"],
            f"{row['trainable_params']:,}",
            f"{row['trainable_percent']:.3g}",
            str(row["peak_rss_mb"]),
            f"{row['train_seconds']:.1f}",
            f"{row['score']:.4f} {row['metric']}",
        )
    Console().print(table)
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written {args.out}")


def _costs(summary: dict) -> dict:
    return {
        "trainable_params": summary["trainable_params"],
        "train_seconds": summary["train_seconds"],
        "trainable_percent": 100 * summary["trainable_params"] / summary["total_params"],
        "peak_rss_mb": summary["peak_rss_mb"],
    }


if __name__ == "__main__":
    main()
