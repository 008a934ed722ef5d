"""What a Trainer-based run resolves before its run directory exists: precision (and what follows from it) for
this machine, the method, and the tokenized inputs every such task hands to `train_and_save`."""

from __future__ import annotations

from dataclasses import dataclass

from trainforge.config import RunConfig
from trainforge.data.report import DataReport
from trainforge.data.splits import Splits
from trainforge.errors import ConfigError, DataError
from trainforge.hardware import Hardware, choose
from trainforge.methods import Method, get_method


@dataclass
class Prepared:
    """Everything checked and tokenized before a run directory exists."""

    config: RunConfig
    hardware: Hardware
    method: Method
    tokenizer: object
    splits: Splits
    train_rows: list[dict]
    eval_rows: list[dict]
    heldout_rows: list[dict]  # before/after scores: test split, else validation
    report: DataReport | None = None  # rows dropped, cut or with unused fields, on the way in


def quiet_library_progress() -> None:
    """Keep one progress bar, the training one: no bars for weight loading or dataset preparation."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def checkpointing_for(precision: str) -> bool | int:
    """`gradient_checkpointing: auto`. Measured on LoRA SFT / DPO of SmolLM2 at 8 × 128 tokens: every 3rd layer in
    bf16 keeps the peak at 0.68–0.73× TRL's (every layer) at no loss of speed; in fp32 the same setting keeps
    0.98–1.01×, every layer 0.70–0.76× for 0–23% of SFT's speed (three runs) and none of DPO's
    (benchmarks/RESULTS.md)."""
    return 3 if precision == "bf16" else True


def resolve_run(config: RunConfig) -> tuple[RunConfig, Hardware, Method]:
    """The config with its precision (and what follows from it) resolved for this machine (the saved config records
    what ran), and its method."""
    quiet_library_progress()
    hardware = choose(config.training.precision, config.training.threads)
    config = config.model_copy(deep=True)
    config.training.precision = hardware.precision
    if config.training.gradient_checkpointing == "auto":
        config.training.gradient_checkpointing = checkpointing_for(hardware.precision)
    method = get_method(config)
    method.check_before_run()
    return config, hardware, method


def print_data_report(report: DataReport | None) -> None:
    """The data report's lines under the run's `data:` line: what was dropped, cut or not read."""
    from rich.console import Console

    for line in report.lines() if report else []:
        Console(stderr=True).print(f"[yellow]data:[/] {line}", highlight=False)


def checked_layout(config: RunConfig, splits: Splits) -> Splits:
    """The splits, once their layout (detected under `data.format: auto`) is known to fit the objective."""
    from trainforge.config.schema import layout_problem

    read_as = splits.layouts or ({splits.source: splits.layout} if splits.layout else {})
    for source, layout in read_as.items():
        problem = layout_problem(config.training.objective, layout)
        if problem:
            why = splits.report.why if len(read_as) == 1 else f"source {source}"
            raise DataError(f"Data {splits.source} reads as `{layout}` ({why}); {problem}.")
    return splits


def check_early_stopping(config: RunConfig, splits: Splits) -> None:
    if config.training.early_stopping.patience and not splits.validation:
        raise ConfigError("`training.early_stopping.patience` needs a validation split to watch; the data has none.")


def prepared_pairs(config: RunConfig, hardware: Hardware, method: Method, tokenizer, splits: Splits) -> Prepared:
    """Preference pairs, or unpaired rows (KTO), that TRL's trainers tokenize, whose prompts leave the answers room
    within `training.max_length`; held out: the test split, else validation (unpaired rows: as the pairs they form)."""
    from trainforge.data.formats import pairs_by_prompt
    from trainforge.data.tokenize import fit_pairs

    report, fitted = DataReport(source=splits.source, layout=splits.layout, why=splits.report.why), {}
    report.merge(splits.report)
    for part in ("train", "validation", "test"):
        found = DataReport()
        fitted[part] = fit_pairs(tokenizer, getattr(splits, part), config.training.max_length, found)
        report.merge(found, "" if part == "train" else part)
    held_out = fitted["test"] or fitted["validation"]
    if splits.layout == "unpaired":  # paired before fitting, so that both answers keep the same (cut) prompt
        pairs = pairs_by_prompt(splits.test or splits.validation, report)
        held_out = fit_pairs(tokenizer, pairs, config.training.max_length, DataReport())
    return Prepared(
        config, hardware, method, tokenizer, splits, fitted["train"], fitted["validation"], held_out, report
    )


def scored_on(config: RunConfig, data: str | None) -> RunConfig:
    """The config of a finished run reading `data` as its test split, for `trainforge eval --data` (`train` must
    name a source but is not trained on; `data.clean` is not applied: every row is scored); unchanged without
    `data`."""
    if not data:
        return config
    fields = {"path": None, "task": None, "validation": None, "train": data, "test": data, "clean": None}
    return config.model_copy(update={"data": config.data.model_copy(update=fields)})
