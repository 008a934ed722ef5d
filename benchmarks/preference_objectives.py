"""Preference objectives on the real model: one short LoRA run of SmolLM2-135M-Instruct per objective (DPO with its
sigmoid, ipo and hinge losses, SimPO, CPO, and KTO on the same pairs split into label-true / label-false rows) on the
bundled constrained-answers task. Every run scores the same held-out pairs after training (the first also before,
for all: the base is the same): pair accuracy (the share where log p(chosen) > log p(rejected)) and the mean margin,
in nats.

    PYTHONPATH=src python benchmarks/preference_objectives.py [--steps 16 --batch-size 4 --task-size 300]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from trainforge.config import load_config
from trainforge.pipeline import train

# LoRA at one learning rate for all; β of each objective's usual range (see `training.beta`). KTO's rows are answers,
# not pairs: 8 a step see the answers of 4 pairs, as the others' 4 pairs do.
OBJECTIVES = {
    "dpo (sigmoid)": {"objective": "dpo", "beta": 0.1},
    "dpo (ipo)": {"objective": "dpo", "loss_type": "ipo", "beta": 0.1},
    "dpo (hinge)": {"objective": "dpo", "loss_type": "hinge", "beta": 0.1},
    "simpo": {"objective": "simpo", "beta": 2.0, "simpo_gamma": 0.5},
    "cpo": {"objective": "cpo", "beta": 0.1},
    "kto (pairs split)": {"objective": "kto", "beta": 0.1},
}


def run_config(runs: Path, name: str, training: dict, args, score_base: bool) -> dict:
    return {
        "name": name,
        "model": {"name": "smollm2-135m-instruct"},
        "data": {
            "task": "constrained-answers",
            "format": "preference",  # kto splits each pair into its two labelled rows
            "task_size": args.task_size,
            "split": {"train": 0.85, "validation": 0.0, "test": 0.15},
        },
        "method": {"name": "lora", "lora": {"r": 16, "alpha": 32, "dropout": 0.0}},
        "training": {
            "max_steps": args.steps,
            "batch_size": args.batch_size * (2 if training["objective"] == "kto" else 1),  # kto: rows, 2 a pair
            "learning_rate": args.learning_rate,
            "max_length": 128,
            "logging_steps": 4,
            "save_steps": 1000,
            "seed": args.seed,
            **training,
        },
        "evaluation": {"generation": False, "before_after": score_base},
        "tracking": {"runs_dir": str(runs), "mlflow": False, "report": False},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4, help="pairs a step")
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--task-size", type=int, default=300, help="pairs generated; 15%% held out")
    parser.add_argument("--only", nargs="*", help="objectives to run (names as in the table)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()

    runs = Path(tempfile.mkdtemp(prefix="tf-bench-")) / "runs"
    results, base = {}, {}
    for label, training in OBJECTIVES.items():
        if args.only and label not in args.only:
            continue
        started = time.perf_counter()
        name = label.split()[0] + "-" + (training.get("loss_type") or "default")
        config = load_config(base=run_config(runs, name, training, args, score_base=not base))
        summary = json.loads(train(config).file("summary.json").read_text())
        base = base or {k: v for k, v in summary.items() if k.startswith("before.")}
        results[label] = {
            "training": training,
            "train_seconds": summary["train_seconds"],
            "wall_seconds": round(time.perf_counter() - started, 1),
            **base,
            **{k: v for k, v in summary.items() if k.startswith("after.")},
            "train.rewards/margins": summary.get("train.rewards/margins"),
        }
        print(f"{label}: {results[label]}", flush=True)
        # after each objective, so that an interrupted invocation keeps the rows it finished
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")

    header = f"{'objective':<18} {'train s':>8} {'pair acc before → after':>24} {'margin before → after (nats)':>30}"
    print(f"\nSmolLM2-135M-Instruct, LoRA r16, {args.steps} steps × {args.batch_size} pairs, lr {args.learning_rate:g}")
    print(header)
    print("-" * len(header))
    for label, r in results.items():
        accuracy = f"{r['before.pair_accuracy']:.3f} → {r['after.pair_accuracy']:.3f}"
        margin = f"{r['before.margin']:+.2f} → {r['after.margin']:+.2f}"
        print(f"{label:<18} {r['train_seconds']:>8.1f} {accuracy:>24} {margin:>30}")


if __name__ == "__main__":
    main()
