"""A chain of runs in one config (`stages:`), e.g. masked-LM domain adaptation → classification fine-tuning, or
SFT → DPO. Each stage is the top-level config with the stage's keys merged over it, runs as an ordinary run named
`<name>-<stage>`, and starts from the model the previous stage produced unless it names its own `model.name`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from trainforge.config.loader import merge, validate
from trainforge.config.schema import RunConfig
from trainforge.errors import ConfigError
from trainforge.pipeline import train
from trainforge.run.finish import fmt
from trainforge.tasks import registry
from trainforge.tracking.registry import summary_of
from trainforge.tracking.rundir import RunDir, list_runs

console = Console(stderr=True)


@dataclass
class Stage:
    name: str
    config: RunConfig
    inherits_model: bool  # True: model.name is replaced by the previous stage's output model at run time


def parse_stages(data: dict[str, Any], source: str) -> list[Stage]:
    """The validated stages of a config with a `stages:` list; every stage is checked before any of them runs."""
    base = {k: v for k, v in data.items() if k != "stages"}
    specs = data["stages"]
    if not isinstance(specs, list) or not specs:
        raise ConfigError(f"Invalid config {source}: key `stages` must be a non-empty list of stage mappings.")
    chain = base.get("name")
    if not chain:
        raise ConfigError(
            f"Invalid config {source}: a config with `stages:` needs a top-level `name`; its stages "
            "run as `<name>-<stage>` and --resume finds them by it."
        )
    stages, seen = [], set()
    for number, spec in enumerate(specs, start=1):
        where = f"{source} stage {number}"
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise ConfigError(
                f"Invalid config {where}: each stage is a mapping with a `name` (e.g. `adapt`) and "
                "the keys it changes (task, model, data, method, training, ...)."
            )
        stage_name = spec["name"]
        if stage_name in seen:
            raise ConfigError(f"Invalid config {where}: stage name {stage_name!r} is used twice.")
        seen.add(stage_name)
        if "stages" in spec:
            raise ConfigError(f"Invalid config {where} ({stage_name}): a stage cannot hold `stages` of its own.")
        config = validate(merge(base, {**spec, "name": f"{chain}-{stage_name}"}), f"{where} ({stage_name})")
        inherits = number > 1 and "name" not in (spec.get("model") or {})
        if not registry.used_as(config).can("chain") and (number < len(specs) or inherits):
            chainable = sorted({t for e in registry.ENTRIES if e.can("chain") for t in e.tasks})
            raise ConfigError(
                f"Invalid config {where} ({stage_name}): task {config.task!r} neither leaves a model a "
                f"next stage can start from nor starts from one; chain {' or '.join(chainable)} stages."
            )
        stages.append(Stage(stage_name, config, inherits))
    return stages


def output_model(run: RunDir) -> Path:
    """The whole-model folder a finished run leaves for the next stage."""
    return registry.for_run(run).hook("output_model", f"Stage run {run.path}")(run)


def run_stages(stages: list[Stage], resume: bool = False) -> list[RunDir]:
    """Run the stages in order. With `resume`, completed stages are kept and an unfinished one continues."""
    runs: list[RunDir] = []
    previous: Path | None = None
    for number, stage in enumerate(stages, start=1):
        config = stage.config
        if stage.inherits_model and previous is not None:
            # a `scratch` model's shape and tokenizer options stay with the stage that built it
            model = config.model.model_copy(
                update={"name": str(previous.resolve()), "architecture": None, "tokenizer": None}
            )
            config = config.model_copy(update={"model": model})
        existing = {r.name: r for r in list_runs(config.tracking.runs_dir)}.get(config.name)
        console.rule(f"[bold]stage {number}/{len(stages)}: {stage.name}[/] → run {config.name}")
        if resume and existing is not None and existing.status == "completed":
            console.print(f"stage {stage.name} already completed in {existing.path}; kept")
            run = existing
        else:
            run = train(config, resume=resume and existing is not None)
        runs.append(run)
        if number < len(stages):
            previous = output_model(run)
    print_stage_table(stages, runs)
    return runs


def train_from_file(path: str | Path, overrides: list[str], resume: bool = False) -> RunDir:
    """Train the run a config file describes; a config with `stages:` runs its stages in order (the last one's
    run directory is returned)."""
    from trainforge import distributed
    from trainforge.config import load_config
    from trainforge.config.loader import read_yaml, with_overrides

    data = with_overrides(read_yaml(path), overrides)
    if "stages" in data:
        if distributed.world_size() > 1:
            distributed.refuse_stages(path)
        return run_stages(parse_stages(data, str(path)), resume=resume)[-1]
    return train(load_config(path, overrides), resume=resume)


def print_stage_table(stages, runs: list[RunDir]) -> None:
    """One row per stage: its run and the scores it ended with."""
    table = Table(title="stages")
    for col in ("stage", "run", "task", "method", "scores after"):
        table.add_column(col)
    for stage, run in zip(stages, runs):
        summary = summary_of(run)
        scores = ", ".join(f"{k.removeprefix('after.')}={fmt(v)}" for k, v in summary.items() if k.startswith("after."))
        objective = f" ({stage.config.training.objective})" if stage.config.task == "lm" else ""
        table.add_row(stage.name, run.name, stage.config.task, stage.config.method.name + objective, scores or "—")
    Console().print(table)
