"""Which config keys a run reads: what its trackers record as the run's params (tracking/trackers.py). A config
holds every section, most of them at their defaults; the record keeps those of the sections the run's kind of
training reads (by the predicates the schema's checks and the task registry use) and of the chosen method's own
options, so a tabular run records no `method.lora.r` and a language model no `cv.folds`. The `tracking` section,
which says where the record goes, and the run's name (the record's own name) are not params. Of `training`, the
keys only some language-model objectives read (`beta`, `loss_type`, ...) are kept where the run's objective reads
them."""

from __future__ import annotations

from typing import Any

from trainforge.config.schema import OBJECTIVE_KEYS, RL_OBJECTIVES, RunConfig, TrainingConfig, is_nn_run

# The blocks of `method:` each method reads (tests/unit/test_trackers.py keeps every registered method here).
METHOD_OPTIONS = {
    "full": (),
    "freeze": ("freeze",),
    "lora": ("lora",),
    "qlora": ("lora", "quantization"),
    "ia3": ("ia3",),
    "adapter": ("adapter",),
    "feature-extraction": ("features",),
    "prefix": ("virtual_tokens",),
    "prompt": ("virtual_tokens",),
}
# The section each application run (its run.json `kind`) reads beside those of the task it runs.
APPLICATION_SECTIONS = {"tune": "tuning", "active": "active", "constitutional": "constitution"}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def applied_sections(config: RunConfig) -> list[str]:
    """The sections (or single keys, dotted) that a run of `config` reads."""
    task = config.task
    if task == "rl-agent":  # an environment and a DQN: no model alias, no data files
        return ["data.env", "agent"]
    if task == "gan":
        return ["data", "gan"]
    tables = ["preprocessing"] if config.data.format == "tabular" else []
    if is_nn_run(task, config.model.name):
        return ["model", "data", *tables, "training", "nn"]
    if task in ("classification", "regression", "clustering"):  # an estimator: its seed is all it takes of training
        return ["model", "data", *tables, "cv", "training.seed"]
    method = ["method.name", *(f"method.{block}" for block in METHOD_OPTIONS[config.method.name])]
    sections = ["model", "data", *method, *training_keys(config), "evaluation"]
    if task == "lm" and config.training.objective in RL_OBJECTIVES:
        sections += ["reward", "rl"]
    elif task == "lm" and not config.distill.teacher:
        sections.append("export")  # `export.merge`: the merged model beside the adapter
    if task == "multi-task":
        sections.append("multitask")
    if config.distill.teacher:
        sections.append("distill")
    return sections


def training_keys(config: RunConfig) -> list[str]:
    """`training`, less the objective-specific keys (schema.OBJECTIVE_KEYS) this run's objective does not read."""
    objective = config.training.objective if config.task == "lm" else None
    return [
        f"training.{key}"
        for key in TrainingConfig.model_fields
        if key not in OBJECTIVE_KEYS or objective in OBJECTIVE_KEYS[key]
    ]


def applied_params(config: RunConfig, kind: str | None = None) -> dict[str, Any]:
    """`task` and every key of `applied_sections`, plus the section of application `kind` (tune, active,
    constitutional), as dotted names."""
    tree = config.model_dump(mode="json")
    extra = [APPLICATION_SECTIONS[kind]] if kind in APPLICATION_SECTIONS else []
    params: dict[str, Any] = {"task": config.task}
    for section in [*applied_sections(config), *extra]:
        node = tree
        for part in section.split("."):
            node = node[part]
        params.update(flatten(node, f"{section}.") if isinstance(node, dict) else {section: node})
    return params


def applied_config(config: RunConfig) -> dict[str, Any]:
    """The config as a tree of only what a run of it reads (`task`, its name and `applied_sections`): what the
    report and the model card show, without the sections that do nothing for this run."""
    tree = config.model_dump(mode="json")
    applied: dict[str, Any] = {"name": config.name, "task": config.task}
    for section in applied_sections(config):
        *parents, last = section.split(".")
        node, target = tree, applied
        for part in parents:
            node, target = node[part], target.setdefault(part, {})
        target[last] = node[last]
    return applied
