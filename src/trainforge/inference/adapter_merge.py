"""Combine the LoRA adapters of several runs into one with peft's `add_weighted_adapter`, saved as a run directory
that eval, predict, chat, serve and export use like any LoRA run (merge.py folds one adapter into its base)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trainforge.config import RunConfig, dump_config, load_config, validate
from trainforge.errors import ConfigError, RunError
from trainforge.models.loading import check_peft_adapter
from trainforge.models.registry import public_name
from trainforge.tracking.rundir import RunDir, atomic_dir, atomic_write_json

# peft's combination types. Those without `svd` / `cat` combine the A and B factors entry by entry (adapters of one
# rank); `cat` stacks the factors (rank: the sum), so it is exactly Σ weight·ΔW; the `_svd` ones combine the full
# ΔW and truncate it back to the largest rank.
METHODS = (
    "cat",
    "linear",
    "svd",
    "ties",
    "ties_svd",
    "dare_linear",
    "dare_ties",
    "dare_linear_svd",
    "dare_ties_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
)
SAME_RANK = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
TAKES_DENSITY = tuple(m for m in METHODS if m.startswith(("ties", "dare", "magnitude")))
DEFAULT_DENSITY = 0.5
SEED = 0  # DARE drops entries at random: the same merge gives the same adapter
# inits whose adapter is relative to a changed base (the principal / quantized residual): its ΔW means nothing alone
BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq")


@dataclass(frozen=True)
class Source:
    run: RunDir
    config: RunConfig
    adapter: dict  # its adapter_config.json

    @property
    def rank(self) -> int:
        """The rank peft allots it: `r`, or the largest of a rank pattern."""
        return max([self.adapter["r"], *(self.adapter.get("rank_pattern") or {}).values()])


def read_source(run: RunDir) -> Source:
    """A finished run whose artifact is a plain LoRA adapter of a language model, else a RunError saying why."""
    if run.status != "completed":
        raise RunError(f"Run {run.path} is {run.status}, not completed: only a finished run's adapter can be merged.")
    config = load_config(run.file("config.yaml"))
    folder = run.path / "adapter"
    if config.task != "lm" or not folder.is_dir():
        what = f"a {config.task} run" if config.task != "lm" else f"method {config.method.name}, saved no adapter/"
        raise RunError(
            f"Run {run.path} ({what}): merging combines the LoRA adapters of language-model runs (task lm, method "
            "lora or qlora)."
        )
    check_peft_adapter(folder)
    adapter = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    if adapter.get("peft_type") != "LORA":
        raise RunError(
            f"Run {run.path} trained a {adapter.get('peft_type')} adapter (method {config.method.name}): only LoRA "
            "adapters (weight updates B·A) can be combined with others."
        )
    if adapter.get("use_dora"):
        raise RunError(
            f"Run {run.path} trained DoRA: peft's weighted merge combines the low-rank factors but not DoRA's trained "
            f"magnitude vectors, so the result would not be DoRA's update. Fold it into its base alone with "
            f"`trainforge export {run.path} --merge`."
        )
    init = str(adapter.get("init_lora_weights"))
    if init.startswith(BASE_CHANGING_INITS):
        raise RunError(
            f"Run {run.path} initialized LoRA with {init}, which moves part of the base weights into the adapter: "
            "its factors are an update of that changed base, not of the shared one, so they cannot be combined."
        )
    return Source(run, config, adapter)


def check_merge(sources: list[Source], method: str, weights: list[float], density: float | None) -> None:
    """Raise a RunError naming the runs when the adapters cannot be merged together, or the options do not fit."""
    names = ", ".join(str(s.run.path) for s in sources)
    if method not in METHODS:
        raise RunError(f"Option `--method` = {method!r}: expected one of {', '.join(METHODS)}.")
    if len(weights) != len(sources):
        raise RunError(
            f"Option `--weights` gives {len(weights)} weight(s) for {len(sources)} run(s) ({names}): give one per run, "
            "in the order of the runs."
        )
    if len(sources) == 1 and method != "linear":
        raise RunError(
            f"Merging one run ({names}) only scales its adapter by its weight: use --method linear (peft merges a "
            f"single adapter linearly whatever the method), or name more runs for {method}."
        )
    if density is not None and method not in TAKES_DENSITY:
        raise RunError(
            f"Option `--density` = {density} is not used by --method {method}: it is the share of each adapter's "
            f"entries kept by {', '.join(TAKES_DENSITY)}."
        )
    if density is not None and not 0 < density <= 1:
        raise RunError(f"Option `--density` = {density}: expected a share of entries kept, in (0, 1].")
    first = sources[0]
    for source in sources[1:]:
        for what, key in (("base model", _base), ("model class", _model_class)):
            if key(source) != key(first):
                raise RunError(
                    f"Runs {first.run.path} and {source.run.path} have different {what}s ({key(first)} and "
                    f"{key(source)}): adapters combine only on the {what} both were trained on."
                )
    if method in SAME_RANK and len({s.rank for s in sources}) > 1:
        ranks = ", ".join(f"{s.run.path} r={s.rank}" for s in sources)
        raise RunError(
            f"--method {method} combines the LoRA factors entry by entry, so the adapters need one rank; these have "
            f"{ranks}. Use --method cat (exact weighted sum, rank the sum of theirs) or svd / ties_svd / "
            "dare_ties_svd (any ranks, truncated to the largest)."
        )


def _base(source: Source) -> str:
    return public_name(source.config.model.name)


def _model_class(source: Source) -> str:
    return "masked LM" if source.config.training.objective == "mlm" else "causal LM"


def merge_adapters(
    runs: list[RunDir],
    out: Path,
    method: str = "ties",
    weights: list[float] | None = None,
    density: float | None = None,
) -> RunDir:
    """Combine the runs' LoRA adapters into one (weights default to 1.0 each, the density of the pruning methods to
    0.5) and save it as the completed run `out`: adapter/ with the first run's tokenizer, its config (method lora at
    the merged rank) and summary.json recording sources, weights and method."""
    from trainforge.inference import load_run_tokenizer
    from trainforge.models.saving import name_public_base, save_model, save_tokenizer

    sources = [read_source(run) for run in runs]
    weights = [1.0] * len(sources) if weights is None else list(weights)
    check_merge(sources, method, weights, density)
    out = Path(out)
    if out.exists():
        raise RunError(f"{out} already exists: give --out a new folder for the merged run.")
    ranks = [s.rank for s in sources]  # peft's rule: cat stacks the factors, the others keep the largest rank
    config = merged_config(sources[0], out, sum(ranks) if method == "cat" else max(ranks))
    density = DEFAULT_DENSITY if density is None and method in TAKES_DENSITY else density
    tokenizers = [load_run_tokenizer(s.run) for s in sources]
    for source, tokenizer in zip(sources[1:], tokenizers[1:]):
        if tokenizer.chat_template != tokenizers[0].chat_template:
            raise RunError(
                f"Runs {sources[0].run.path} and {source.run.path} saved different chat templates: an adapter answers "
                "prompts in the template it learned, so a merged one would answer one of them in a format it never saw."
            )
    model = combine(sources, method, weights, density)
    first = sources[0]
    record = {
        "method": method,
        "density": density,
        "seed": SEED if method.startswith("dare") else None,
        "rank": model.peft_config["default"].r,
        "sources": [
            {
                "run": str(s.run.path.resolve()),
                "weight": w,
                "rank": s.rank,
                "data": s.config.data.task or s.config.data.path or s.config.data.train,
            }
            for s, w in zip(sources, weights)
        ],
    }
    run = RunDir.create(out.parent, out.name, dump_config(config), kind=first.run.info().get("kind"))
    with run.failing_on_error():
        with atomic_dir(run.path / "adapter") as tmp:
            save_model(model, tmp)
            name_public_base(tmp, _base(first))
            save_tokenizer(tokenizers[0], tmp)
        summary = {
            "method": f"lora (merge: {method})",  # what `runs list` shows
            "model": first.config.model.name,
            "merged_from": record,
            "adapter_params": sum(p.numel() for n, p in model.named_parameters() if "lora_" in n),
            "mlflow_run_id": None,
        }
        atomic_write_json(run.file("summary.json"), summary)
        run.set_status("completed", merged_from=record)
    return run


def merged_config(first: Source, out: Path, rank: int) -> RunConfig:
    """The first run's config as the merged run's: named after `out`, method lora at the merged rank with alpha = r
    (scaling 1, as peft saves the merged adapter). Validated before any work, as the name `--out` gives may not be
    a run name."""
    data = first.config.model_dump(mode="json")
    data.update(name=out.name, tracking={**data["tracking"], "runs_dir": str(out.parent)})
    data["method"].update(name="lora", lora={**data["method"]["lora"], "r": rank, "alpha": rank, "use_rslora": False})
    try:
        return validate(data, str(out / "config.yaml"))
    except ConfigError as err:
        raise RunError(f"Option `--out` = {out}: its folder name becomes the merged run's name, and {err}") from None


def combine(sources: list[Source], method: str, weights: list[float], density: float | None):
    """The base with the sources' adapters loaded and peft's `add_weighted_adapter` of them as its only adapter,
    named `default` (peft saves that one in the folder itself, others in a subfolder named after them)."""
    import torch

    from trainforge.models import load_language_model
    from trainforge.models.loading import load_peft_adapter

    first, names = sources[0], [f"source{i}" for i in range(len(sources))]
    model = load_peft_adapter(
        first.run.path / "adapter",
        lambda: load_language_model(first.config.model.name, first.config.training.objective),
        adapter_name=names[0],
    )
    for name, source in zip(names[1:], sources[1:]):
        model.load_adapter(source.run.path / "adapter", adapter_name=name)
    # The merged adapter copies the first one's config with alpha = r, and its factors carry each source's scaling
    # already: scaling 1 needs plain LoRA (rsLoRA's alpha / sqrt(r) would multiply it by sqrt(r)) and a plain init.
    model.peft_config[names[0]].use_rslora = False
    model.peft_config[names[0]].init_lora_weights = True
    torch.manual_seed(SEED)
    try:
        model.add_weighted_adapter(names, weights, "default", combination_type=method, density=density)
    except (ValueError, TypeError) as err:
        runs_named = ", ".join(str(s.run.path) for s in sources)
        raise RunError(f"peft could not merge the adapters of {runs_named} with --method {method}: {err}") from None
    model.set_adapter("default")
    for name in names:
        model.delete_adapter(name)
    # peft reads the base's own folder while saving, as in training; name_public_base names it for other machines
    model.peft_config["default"].base_model_name_or_path = model.get_base_model().name_or_path
    return model
