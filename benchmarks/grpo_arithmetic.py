"""GRPO that teaches a verifiable skill: examples/grpo-arithmetic.yaml (SmolLM2-135M-Instruct, LoRA, rewards
`format` + `exact_answer` on the bundled arithmetic word problems) run as-is; recorded: the mean reward of the
rollouts per step (the weighted sum and each named reward) and the held-out exact accuracy (greedy) before and after,
overall and per operation (the prompt's worked example adds: a model that copies it gets the other two wrong).

    PYTHONPATH=src python benchmarks/grpo_arithmetic.py [--steps N] [--runs-dir DIR] [--out benchmarks/grpo_arithmetic.json]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from trainforge.config import load_config
from trainforge.data.tasks import ARITHMETIC_PROBLEMS
from trainforge.pipeline import train

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "grpo-arithmetic.yaml"
# each operation's problem template (data/tasks.py) as a pattern: its words, anything in place of each {field}
OPERATIONS = {
    operation: re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(template)))
    for operation, (template, _, _) in ARITHMETIC_PROBLEMS.items()
}


def accuracy_by_operation(samples: list[dict]) -> dict[str, float]:
    """Exact accuracy of the greedy held-out answers per operation, told apart by the problem's wording."""
    out = {}
    for operation, pattern in OPERATIONS.items():
        scores = [s["exact_answer"] for s in samples if pattern.search(s["prompt"].rsplit("Problem:", 1)[-1])]
        out[operation] = round(sum(scores) / len(scores), 3) if scores else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training.max_steps (default: the example's)")
    parser.add_argument("--runs-dir", default=None, help="keep the run here (its samples, report); default: a temp dir")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    overrides = ["tracking.report_to=[]"] + ([f"training.max_steps={args.steps}"] if args.steps else [])
    with tempfile.TemporaryDirectory() as temp:
        runs = args.runs_dir or temp
        config = load_config(EXAMPLE, [*overrides, f"tracking.runs_dir={runs}"])
        started = time.perf_counter()
        run = train(config)
        seconds = time.perf_counter() - started
        summary = json.loads(run.file("summary.json").read_text())
        curve = [
            {"step": m["step"], "reward": round(m["reward"], 4)}
            | {k.split("/")[1]: round(v, 4) for k, v in m.items() if k.startswith("rewards/") and k.endswith("/mean")}
            for m in run.metrics()
            if "reward" in m
        ]
        by_operation = {
            when: accuracy_by_operation(json.loads(run.file(f"eval_{when}.json").read_text())["samples"])
            for when in ("before", "after")
        }
    result = {
        "config": str(EXAMPLE.relative_to(EXAMPLE.parent.parent)),
        "steps": summary["steps"],
        "wall_seconds": round(seconds, 1),
        "held_out_prompts": config.evaluation.max_samples,
        "exact_accuracy": {"before": summary["before.mean_exact_answer"], "after": summary["after.mean_exact_answer"]},
        "exact_accuracy_by_operation": {
            operation: {when: by_operation[when][operation] for when in ("before", "after")} for operation in OPERATIONS
        },
        "format": {"before": summary["before.mean_format"], "after": summary["after.mean_format"]},
        "mean_reward": {"before": summary["before.mean_reward"], "after": summary["after.mean_reward"]},
        "reward_curve": curve,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "reward_curve"}, indent=2))


if __name__ == "__main__":
    main()
