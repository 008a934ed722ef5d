"""The task registry: plain data. Each entry names a task, the module that implements it (imported on first use,
so `trainforge --help` loads no torch), how it recognises a config it handles, what its runs are named, and what
it can do. Every command that has a config or a run in hand asks here which task it is and whether it can do
what the user asked; nothing else branches on task names. Adding a task: a module with the `Task` hooks and an
entry below (docs/architecture.md); the contract test (tests/unit/test_task_contract.py) then checks it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from trainforge.config import RunConfig, load_config
from trainforge.config.schema import RL_OBJECTIVES, is_nn_run
from trainforge.data.versioning import DataVersion
from trainforge.errors import ConfigError, RunError, TrainforgeError
from trainforge.run.directory import open_run
from trainforge.tracking.rundir import RunDir


class Task(Protocol):
    """The hooks a task module exposes, as plain module functions: a contract, not a base class to inherit code
    from. `train` is always there, and `evaluate` except in a wrapper (its runs are the wrapped task's); each other
    hook exists exactly when the entry claims its capability (HOOKS)."""

    def train(self, config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunDir: ...

    def evaluate(self, run: RunDir, data: str | None = None, **options) -> dict[str, float]:
        """Scores of a finished run on its own test split, or on every row of `data`."""

    def predict(self, run: RunDir, data: str, out: str | None = None, **options) -> Path:
        """Predictions for every row of `data`, written to `out` (default: beside `data`); the path written."""

    def backend(self, run: RunDir):
        """What `trainforge serve` answers with: a generative or a predictive backend (inference.backends)."""

    def tuning_objective(self, config: RunConfig):
        """config → (score, details) for `trainforge tune`, with `metric`, `direction`, `last_step`,
        `sections_only` and `default_space(config)`."""

    def export_model(self, run: RunDir):
        """(fp32 model, tokenizer, transformers auto class) of a finished run, for `trainforge export`."""

    def output_model(self, run: RunDir) -> Path:
        """The whole-model folder a finished run leaves for the next stage of a chain."""


# capability → what a task that has it can do (error messages and docs), and the hook that provides it
CAPABILITIES = {
    "resume": "resume an interrupted run (train --resume)",
    "data-parallel": "train data-parallel (train --nproc, torchrun, accelerate launch)",
    "tune": "be tuned (trainforge tune)",
    "predict": "predict for every row of a file (trainforge predict)",
    "serve": "be served over HTTP (trainforge serve)",
    "generate": "generate text (trainforge chat, completions in serve, the dashboard's chat)",
    "export": "export its model for other tools (trainforge export)",
    "chain": "hand its model to the next stage of a `stages:` chain",
}
HOOKS = {
    "predict": "predict",
    "serve": "backend",
    "tune": "tuning_objective",
    "export": "export_model",
    "chain": "output_model",
}
APPLICATION_RUNS = {
    "tune": "a tuning run (trainforge tune): its best config is best.yaml",
    "active": "an active-learning run (trainforge active)",
    "constitutional": "a constitutional-AI data run (trainforge constitutional): its data files train a model",
}


@dataclass(frozen=True)
class TaskEntry:
    name: str
    module: str
    summary: str
    tasks: tuple[str, ...]  # the `task:` values it serves
    handles: Callable[[RunConfig], bool]  # which of those configs are its own (exactly one entry handles each)
    stem: Callable[[RunConfig], str]  # run names: <stem>-<time>
    capabilities: frozenset[str]
    wraps: tuple[str, ...] = ()  # tasks whose training it extends; its runs are then used as theirs

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def load(self) -> Task:
        return importlib.import_module(self.module)

    def require(self, capability: str, what: str) -> None:
        """A clear error naming what the task can do when it cannot do `capability`; `what` names the run or
        config asked about."""
        if not self.can(capability):
            able = ", ".join(["evaluate (trainforge eval)", *(CAPABILITIES[c] for c in CAPABILITIES if self.can(c))])
            raise RunError(
                f"{what}: task {self.name} ({self.summary}) cannot {CAPABILITIES[capability]}; it can {able}."
            )

    def hook(self, name: str, what: str = "This run") -> Callable:
        """The task module's hook `name`, after checking the capability it provides."""
        needed = next((c for c, h in HOOKS.items() if h == name), None)
        if needed is not None:
            self.require(needed, what)
        return getattr(self.load(), name)


def _lm(config: RunConfig) -> bool:
    return config.task == "lm" and not config.distill.teacher


ENTRIES = (
    TaskEntry(
        name="lm",
        module="trainforge.tasks.lm.task",
        summary="a language model trained with sft, clm, mlm, dpo, orpo, simpo, cpo or kto",
        tasks=("lm",),
        handles=lambda c: _lm(c) and c.training.objective not in RL_OBJECTIVES,
        stem=lambda c: f"{c.method.name}-{c.training.objective}",
        capabilities=frozenset({"resume", "data-parallel", "tune", "predict", "serve", "generate", "export", "chain"}),
    ),
    TaskEntry(
        name="rl",
        module="trainforge.tasks.lm.rl",
        summary="task lm with objective ppo / grpo / rloo: online RL against a reward, "
        "which runs its own RL loop, not the Trainer's",
        tasks=("lm",),
        handles=lambda c: _lm(c) and c.training.objective in RL_OBJECTIVES,
        stem=lambda c: f"{c.method.name}-{c.training.objective}",
        capabilities=frozenset({"resume", "predict", "serve", "generate", "export", "chain"}),
    ),
    TaskEntry(
        name="distill",
        module="trainforge.tasks.distill.task",
        summary="a student distilled from a teacher (`distill:`)",
        tasks=("lm", "text-classification"),
        handles=lambda c: bool(c.distill.teacher),
        stem=lambda c: f"{c.method.name}-distill",
        capabilities=frozenset({"resume", "tune"}),
        wraps=("lm", "text-classification"),
    ),
    TaskEntry(
        name="text-classification",
        module="trainforge.tasks.text_classification.task",
        summary="a pretrained encoder with a classification head",
        tasks=("text-classification",),
        handles=lambda c: (
            c.task == "text-classification" and not is_nn_run(c.task, c.model.name) and not c.distill.teacher
        ),
        stem=lambda c: f"{c.method.name}-textcls",
        capabilities=frozenset({"resume", "data-parallel", "tune", "predict", "serve", "export", "chain"}),
    ),
    TaskEntry(
        name="multi-task",
        module="trainforge.tasks.multi_task.task",
        summary="one shared encoder, one head per task",
        tasks=("multi-task",),
        handles=lambda c: c.task == "multi-task",
        stem=lambda c: f"{c.method.name}-multitask",
        capabilities=frozenset({"resume", "tune", "predict"}),
    ),
    TaskEntry(
        name="reward",
        module="trainforge.tasks.reward.task",
        summary="a reward model: a sequence scorer trained on preference pairs",
        tasks=("reward",),
        handles=lambda c: c.task == "reward",
        stem=lambda c: f"{c.method.name}-reward",
        capabilities=frozenset({"resume"}),
    ),
    TaskEntry(
        name="tabular",
        module="trainforge.tasks.tabular.task",
        summary="a classical estimator on a table (scikit-learn, LightGBM, XGBoost)",
        tasks=("classification", "regression", "clustering"),
        handles=lambda c: (
            c.task in ("classification", "regression", "clustering") and not is_nn_run(c.task, c.model.name)
        ),
        stem=lambda c: f"{c.model.name}-{c.task}",
        capabilities=frozenset({"tune", "predict", "serve"}),
    ),
    TaskEntry(
        name="networks",
        module="trainforge.tasks.networks.task",
        summary="a network trained from scratch (MLP, CNN, autoencoder, LSTM / GRU / RNN, character LM, seq2seq)",
        tasks=(
            "classification",
            "regression",
            "text-classification",
            "image-classification",
            "anomaly-detection",
            "sequence-generation",
            "seq2seq",
        ),
        handles=lambda c: is_nn_run(c.task, c.model.name),
        stem=lambda c: f"{c.model.name}-{c.task}",
        capabilities=frozenset({"resume", "tune", "predict"}),
    ),
    TaskEntry(
        name="gan",
        module="trainforge.tasks.gan.task",
        summary="a generator / discriminator pair on numeric rows",
        tasks=("gan",),
        handles=lambda c: c.task == "gan",
        stem=lambda c: "gan",
        capabilities=frozenset({"resume"}),
    ),
    TaskEntry(
        name="rl-agent",
        module="trainforge.tasks.rl_agent.task",
        summary="a DQN policy trained in a gymnasium environment",
        tasks=("rl-agent",),
        handles=lambda c: c.task == "rl-agent",
        stem=lambda c: f"dqn-{c.data.env}",
        capabilities=frozenset({"resume"}),
    ),
)
BY_NAME = {entry.name: entry for entry in ENTRIES}


def get(name: str) -> TaskEntry:
    return BY_NAME[name]


def for_config(config: RunConfig) -> TaskEntry:
    found = [entry for entry in ENTRIES if entry.handles(config)]
    if len(found) != 1:  # the contract test keeps this from happening
        raise ConfigError(
            f"Task {config.task!r} (model {config.model.name!r}): "
            f"{'no task handles this config' if not found else 'claimed by ' + ', '.join(e.name for e in found)}."
        )
    return found[0]


def run_config(run: RunDir) -> RunConfig:
    try:
        return load_config(run.file("config.yaml"))
    except TrainforgeError as err:
        raise RunError(
            f"Run {run.path}: its config.yaml cannot be read as a run config, so what the run is cannot "
            f"be told ({err})."
        ) from None


def used_as(config: RunConfig) -> TaskEntry:
    """The task whose hooks use the finished runs of `config`: the one that trains it or, for a wrapper, the task
    it wraps (a distilled classifier is used as any classifier)."""
    entry = for_config(config)
    if entry.wraps:
        return next(get(name) for name in entry.wraps if config.task in get(name).tasks)
    return entry


def for_run(run: RunDir) -> TaskEntry:
    """The task a finished run is used as: the one that made it (recorded in run.json; for runs made before that
    was recorded, the one that handles its config), a wrapper's run counting as a run of the task it wraps."""
    kind = run.info().get("kind")
    if kind in APPLICATION_RUNS:
        raise RunError(f"Run {run.path} is {APPLICATION_RUNS[kind]}, not a trained model.")
    entry = BY_NAME.get(kind)
    if entry is not None and not entry.wraps:
        return entry
    return used_as(run_config(run))


def open_task_run(name: str, config: RunConfig, resume: bool, data: DataVersion | None) -> tuple[RunConfig, RunDir]:
    """`run.directory.open_run` for task `name`: its run named after its stem, its kind and the `data` it trains
    on recorded (None only for a task that reads no data)."""
    entry = get(name)
    return open_run(config, resume, entry.name, entry.stem(config), data)
