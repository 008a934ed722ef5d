"""Tool calling before and after LoRA SFT: SmolLM2-135M-Instruct on the bundled `tool-calls` task
(examples/tool-calls-sft.yaml), scored on held-out prompts by tool selection, exact match of the parsed arguments,
JSON validity of the written calls and "no call when none is needed".

    PYTHONPATH=src python benchmarks/tool_calls_sft.py [key=value ...]   # overrides for the example config
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["tool_selection", "tool_arguments_exact", "tool_json_valid", "tool_no_call", "exact_match"]


def _number(value):
    """A score as JSON allows it: a share with nothing to count (NaN, e.g. JSON validity before any call) as null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def main() -> None:
    from trainforge.stages import train_from_file
    from trainforge.tracking.rundir import read_json

    with tempfile.TemporaryDirectory() as runs:
        started = time.perf_counter()
        run = train_from_file(
            str(ROOT / "examples" / "tool-calls-sft.yaml"),
            [f"tracking.runs_dir={runs}", "tracking.mlflow=false", *sys.argv[1:]],
        )
        summary = read_json(run.file("summary.json"))
        samples = read_json(run.file("eval_after.json"))["samples"][:3]
    result = {
        "config": "examples/tool-calls-sft.yaml " + " ".join(sys.argv[1:]),
        "wall_seconds": round(time.perf_counter() - started),
        "train_seconds": summary.get("train_seconds"),
        "steps": summary.get("steps"),
        "scores": {m: {side: _number(summary.get(f"{side}.{m}")) for side in ("before", "after")} for m in METRICS},
        "samples": samples,
    }
    table = Table(title=f"tool-calls, LoRA SFT of SmolLM2-135M ({result['steps']} steps, {result['wall_seconds']} s)")
    for column in ("metric (held-out)", "before", "after"):
        table.add_column(column)
    for metric, score in result["scores"].items():
        table.add_row(metric, *(f"{v:.3f}" if isinstance(v, float) else "n/a" for v in score.values()))
    Console().print(table)
    Path(__file__).with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
