"""Optimizer state per `training.optimizer`: the bytes every optimizer keeps after one step of full SFT (the run
summary's `optimizer_state_bytes`), as a share of AdamW's, for tiny-llama and SmolLM2-135M-Instruct on the bundled
dates → JSON task. Each optimizer runs with its defaults (GaLore / APOLLO: rank 128 on attention and MLP matrices;
adamw_8bit: transformers keeps embeddings in 32-bit state).

    PYTHONPATH=src python benchmarks/optimizer_memory.py [--models tiny-llama smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

OPTIMIZERS = ["adamw", "adamw_8bit", "adafactor", "galore", "apollo", "muon", "schedule_free", "sgd"]


def state_bytes(model: str, optimizer: str, runs_dir: Path) -> tuple[int, int]:
    """(optimizer_state_bytes, trainable_params) after one step of full SFT."""
    from trainforge.config import load_config
    from trainforge.pipeline import train
    from trainforge.tracking.rundir import read_json

    config = load_config(
        base={
            "name": f"{model}-{optimizer}",
            "model": {"name": model},
            "data": {"task": "dates-json", "task_size": 64},
            "method": {"name": "full"},
            "training": {"max_steps": 1, "batch_size": 2, "max_length": 128, "optimizer": optimizer},
            "evaluation": {"before_after": False, "generation": False, "perplexity": False},
            "tracking": {"runs_dir": str(runs_dir), "report_to": [], "report": False},
        }
    )
    summary = read_json(train(config).file("summary.json"))
    return summary["optimizer_state_bytes"], summary["trainable_params"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-llama", "smollm2-135m-instruct"])
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as runs_dir:
        for model in args.models:
            results[model] = {o: state_bytes(model, o, Path(runs_dir)) for o in OPTIMIZERS}
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    table = Table(title="optimizer state after one step of full SFT (MB; share of AdamW's)")
    table.add_column("optimizer")
    for model in args.models:
        table.add_column(f"{model} ({results[model]['adamw'][1] / 1e6:.1f}M params)", justify="right")
    for optimizer in OPTIMIZERS:
        cells = []
        for model in args.models:
            kept, adamw = results[model][optimizer][0], results[model]["adamw"][0]
            cells.append(f"{kept / 1e6:.1f} MB ({kept / adamw:.0%})")
        table.add_row(optimizer, *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
