"""Domain adaptation, measured: the `examples/domain-adaptation.yaml` chain (masked-LM continued pretraining of
MiniLM on the shifted domain's texts → classification fine-tuning) against the same classification stage started
from the unadapted MiniLM. Prints domain perplexity before/after adaptation and downstream accuracy with and
without the adaptation step, and writes them to a JSON file.

    PYTHONPATH=src python benchmarks/domain_adaptation.py [--config examples/domain-adaptation.yaml] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "domain-adaptation.yaml"))
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the chain's top-level keys")
    args = parser.parse_args()

    from trainforge.config.loader import read_yaml, with_overrides
    from trainforge.pipeline import train
    from trainforge.stages import parse_stages, run_stages
    from trainforge.tracking.rundir import read_json

    runs_dir = tempfile.mkdtemp(prefix="domain-adaptation-")
    data = with_overrides(
        read_yaml(args.config), [*args.overrides, f"tracking.runs_dir={runs_dir}", "tracking.mlflow=false"]
    )
    stages = parse_stages(data, args.config)
    adapt, classify = stages[0], stages[-1]
    adapted_runs = run_stages(stages)
    baseline = classify.config.model_copy(deep=True)
    baseline.name = f"{baseline.name}-unadapted"
    baseline.model.name = adapt.config.model.name  # the encoder the adaptation stage started from
    baseline_run = train(baseline)

    summary = lambda run: read_json(run.file("summary.json"))  # noqa: E731
    adapted, downstream, unadapted = summary(adapted_runs[0]), summary(adapted_runs[-1]), summary(baseline_run)
    result = {
        "model": adapt.config.model.name,
        "domain_perplexity_before": adapted["before.perplexity"],
        "domain_perplexity_after": adapted["after.perplexity"],
        "adapt_seconds": adapted["train_seconds"],
        "accuracy_without_adaptation": unadapted["after.accuracy"],
        "accuracy_with_adaptation": downstream["after.accuracy"],
        "macro_f1_without_adaptation": unadapted["after.macro_f1"],
        "macro_f1_with_adaptation": downstream["after.macro_f1"],
    }
    table = Table(title=f"domain adaptation of {result['model']} ({args.config})")
    for column in ("measure", "without adaptation", "with adaptation"):
        table.add_column(column)
    table.add_row(
        "domain perplexity (masked tokens)",
        f"{result['domain_perplexity_before']:.4g}",
        f"{result['domain_perplexity_after']:.4g}",
    )
    table.add_row(
        "downstream accuracy",
        f"{result['accuracy_without_adaptation']:.4f}",
        f"{result['accuracy_with_adaptation']:.4f}",
    )
    table.add_row(
        "downstream macro-F1",
        f"{result['macro_f1_without_adaptation']:.4f}",
        f"{result['macro_f1_with_adaptation']:.4f}",
    )
    Console().print(table)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}; runs in {runs_dir}")


if __name__ == "__main__":
    main()
