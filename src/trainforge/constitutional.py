"""Constitutional AI (Bai et al. 2022) as a data generator: the policy answers each prompt, a critic critiques the
answer against a principle drawn from the constitution, the policy revises. Revisions become SFT rows
(prompt → revision) and (revision ≻ original) pairs become preference rows for DPO / ORPO (RLAIF); every generated
row keeps its provenance in revisions.jsonl.

    trainforge constitutional run.yaml    # writes runs/<name>/{revisions,sft,preferences}.jsonl + summary
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress, TimeElapsedColumn
from rich.table import Table

from trainforge.config import RunConfig
from trainforge.config.loader import load_yaml_text
from trainforge.config.schema import Principle
from trainforge.data.readers import read_rows
from trainforge.data.tasks import generate_task, satisfies
from trainforge.errors import ConfigError, DataError
from trainforge.tracking.rundir import RunDir, atomic_write_text

console = Console(stderr=True)
BUNDLED_PRINCIPLES = Path(__file__).parent / "recipes" / "constitution.yaml"
OUTPUTS = ("revisions.jsonl", "sft.jsonl", "preferences.jsonl")


def load_principles(spec: str | list[Principle] | None) -> list[Principle]:
    """The configured principles: inline, from a YAML file (`principles:` list), or the bundled constitution."""
    if isinstance(spec, list):
        if not spec:
            raise ConfigError("Key `constitution.principles` is an empty list; give at least one principle.")
        return spec
    path = Path(spec) if spec else BUNDLED_PRINCIPLES
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, ConfigError) as err:
        raise ConfigError(f"Key `constitution.principles`: could not read {path} as YAML: {err}") from None
    items = data.get("principles") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ConfigError(
            f"Principles file {path}: expected a non-empty `principles:` list of "
            "{name, critique_request, revision_request} mappings."
        )
    principles = []
    for number, item in enumerate(items, start=1):
        try:
            principles.append(Principle.model_validate(item))
        except ValidationError as err:
            problem = "; ".join(f"`{'.'.join(map(str, e['loc'])) or 'entry'}`: {e['msg']}" for e in err.errors())
            raise ConfigError(
                f"Principles file {path}, principle {number}: {problem} (each principle has a `name`, "
                "a `critique_request` and a `revision_request`)."
            ) from None
    names = [p.name for p in principles]
    if len(set(names)) != len(names):
        raise ConfigError(f"Principles file {path}: principle names must be distinct, got {names}.")
    return principles


def read_prompts(config: RunConfig) -> list[dict]:
    """{"prompt": messages ending with the user's turn, "constraint"?} per data row: preference rows (`prompt`),
    chat rows (a trailing assistant turn is dropped) or alpaca rows (`instruction`)."""
    from trainforge.inference import prompt_messages

    data = config.data
    if data.task:
        _, rows = generate_task(data.task, data.task_size, config.training.seed)
        numbered, source = list(enumerate(rows, start=1)), f"bundled task {data.task}"
    elif data.path or data.train:
        source = data.path or data.train
        numbered = read_rows(source, data.max_rows)
    else:
        raise ConfigError(
            "Key `data`: constitutional generation reads prompts from `data.task`, `data.path` or `data.train`."
        )
    prompts = []
    for number, row in numbered:
        if {"prompt", "messages", "conversations", "instruction"} & set(row):
            messages = prompt_messages(row, source, number)
        else:
            raise DataError(
                f"Data file {source}, row {number}: expected a prompt: a `prompt` field, a `messages` "
                f"list or an alpaca `instruction`; found fields {', '.join(map(str, row)) or 'none'}."
            )
        if not messages or messages[-1]["role"] != "user":
            raise DataError(
                f"Data file {source}, row {number}: the conversation must end with the user's turn to answer."
            )
        prompts.append({"prompt": messages, **({"constraint": row["constraint"]} if "constraint" in row else {})})
    if not prompts:
        raise DataError(f"Data {source} holds no prompts.")
    return prompts


@dataclass
class Generator:
    """A model that answers conversations with its own chat template."""

    name: str
    model: object
    tokenizer: object
    max_new_tokens: int
    batch_size: int
    precision: str
    sampling: dict

    def answer(self, conversations: list[list[dict]], advance: Callable[[int], None]) -> list[str]:
        from trainforge.data.tokenize import render
        from trainforge.evaluation.lm import generate

        prompts = [render(self.tokenizer, c, add_generation_prompt=True) for c in conversations]
        answers = []
        for start in range(0, len(prompts), self.batch_size):  # one batch at a time, for the progress bar
            chunk = prompts[start : start + self.batch_size]
            answers += generate(
                self.model, self.tokenizer, chunk, self.max_new_tokens, self.batch_size, self.precision, self.sampling
            )
            advance(len(chunk))
        return answers


def load_generator(name: str, config: RunConfig, hardware) -> Generator:
    """A model alias or folder, or a finished run directory (base + adapter, or its saved model)."""
    from trainforge.inference import load_run_model
    from trainforge.models import load_causal_lm, load_tokenizer
    from trainforge.tracking.rundir import STATUS_FILE

    if (Path(name) / STATUS_FILE).is_file():
        model, tokenizer = load_run_model(RunDir(name))
    else:
        model, tokenizer = load_causal_lm(name), load_tokenizer(name)
    if next(model.parameters()).device.type != hardware.device:  # quantized models are placed when loaded
        model.to(hardware.device)
    model.eval()
    c = config.constitution
    sampling = {"do_sample": True, "temperature": c.temperature} if c.do_sample else {"do_sample": False}
    return Generator(name, model, tokenizer, c.max_new_tokens, c.batch_size, hardware.precision, sampling)


def critique_revise(
    prompts: list[dict],
    principles: list[Principle],
    policy: Generator,
    critic: Generator,
    samples_per_prompt: int,
    seed: int,
) -> list[dict]:
    """One provenance row per (prompt, sampled principle): original → critique → revision. Seeded: principle draws
    from `seed`, and torch is reseeded before each of the three generation passes."""
    import torch

    rng = random.Random(seed)
    k = min(samples_per_prompt, len(principles))
    drawn = [rng.sample(principles, k) for _ in prompts]
    pairs = [(i, principle) for i, chosen in enumerate(drawn) for principle in chosen]
    with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), console=console) as progress:

        def phase(label: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(label, total=total)
            torch.manual_seed(seed)
            return lambda n: progress.advance(task, n)

        originals = policy.answer([p["prompt"] for p in prompts], phase(f"answering ({policy.name})", len(prompts)))
        asked = [
            [
                *prompts[i]["prompt"],
                {"role": "assistant", "content": originals[i] or "(no answer)"},
                {"role": "user", "content": principle.critique_request},
            ]
            for i, principle in pairs
        ]
        critiques = critic.answer(asked, phase(f"critiquing ({critic.name})", len(pairs)))
        revise = [
            [
                *a,
                {"role": "assistant", "content": c or "(no critique)"},
                {"role": "user", "content": principle.revision_request},
            ]
            for a, c, (_, principle) in zip(asked, critiques, pairs)
        ]
        revisions = policy.answer(revise, phase(f"revising ({policy.name})", len(pairs)))
    rows = []
    for (i, principle), critique, revision in zip(pairs, critiques, revisions):
        p = prompts[i]
        row = {
            "prompt": p["prompt"],
            "principle": principle.name,
            "critique_request": principle.critique_request,
            "revision_request": principle.revision_request,
            "original": originals[i],
            "critique": critique,
            "revision": revision,
            "policy": policy.name,
            "critic": critic.name,
            "seed": seed,
        }
        if "constraint" in p:
            row.update(
                constraint=p["constraint"],
                original_satisfies=satisfies(p, row["original"]),
                revision_satisfies=satisfies(p, revision),
            )
        rows.append(row)
    return rows


def training_rows(rows: list[dict], pairs: str = "revision") -> tuple[list[dict], list[dict]]:
    """SFT chat rows (prompt → revision) and preference rows (chosen ≻ rejected). `revision`: the revision ≻ the
    original; `checker`: the answer meeting the prompt's constraint ≻ the one missing it, SFT on revisions meeting
    it. An empty answer, or a revision equal to the original, teaches nothing and is left out."""
    sft, preferences = [], []
    for row in rows:
        revision, original = row["revision"].strip(), row["original"].strip()
        extra = {"constraint": row["constraint"]} if "constraint" in row else {}
        if pairs == "checker" and not extra:
            continue
        if revision and (pairs == "revision" or row["revision_satisfies"]):
            sft.append({"messages": [*row["prompt"], {"role": "assistant", "content": revision}], **extra})
        if not (revision and original and revision != original):
            continue
        if pairs == "revision":
            preferences.append({"prompt": row["prompt"], "chosen": revision, "rejected": original, **extra})
        elif row["revision_satisfies"] != row["original_satisfies"]:
            chosen, rejected = (revision, original) if row["revision_satisfies"] else (original, revision)
            preferences.append({"prompt": row["prompt"], "chosen": chosen, "rejected": rejected, **extra})
    return sft, preferences


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _rate(rows: list[dict], key: str) -> float | None:
    checked = [r[key] for r in rows if key in r]
    return round(sum(checked) / len(checked), 4) if checked else None


def summarize(rows: list[dict], sft: list[dict], preferences: list[dict], prompts: int) -> tuple[dict, list[list]]:
    summary = {
        "prompts": prompts,
        "revisions": len(rows),
        "sft_rows": len(sft),
        "preference_rows": len(preferences),
        "changed": round(sum(r["revision"].strip() != r["original"].strip() for r in rows) / len(rows), 4),
    }
    for key in ("original_satisfies", "revision_satisfies"):
        if (rate := _rate(rows, key)) is not None:
            summary[key] = rate
    table = []
    for name in dict.fromkeys(r["principle"] for r in rows):
        group = [r for r in rows if r["principle"] == name]
        changed = sum(r["revision"].strip() != r["original"].strip() for r in group)
        table.append(
            [name, len(group), changed, _rate(group, "original_satisfies"), _rate(group, "revision_satisfies")]
        )
    return summary, table


def run_constitutional(config: RunConfig) -> RunDir:
    """Generate, then write revisions.jsonl, sft.jsonl, preferences.jsonl, summary.json and the report."""
    from trainforge.hardware import choose
    from trainforge.run.directory import open_run
    from trainforge.run.finish import finish_run, fmt

    c = config.constitution
    principles = load_principles(c.principles)
    prompts = read_prompts(config)
    if c.pairs == "checker" and not any("constraint" in p for p in prompts):
        raise ConfigError(
            "Key `constitution.pairs` = 'checker' orders pairs by each prompt's checkable `constraint`, "
            "and no prompt of `data` carries one (the bundled task constrained-answers does); use "
            "`pairs: revision`."
        )
    hardware = choose(config.training.precision, config.training.threads)
    config, run = open_run(config, False, "constitutional", "constitutional")
    with run.failing_on_error():
        console.print(
            f"[bold]constitutional:[/] {len(prompts)} prompts × {min(c.samples_per_prompt, len(principles))} "
            f"of {len(principles)} principles; policy {config.model.name}, critic {c.critic or 'the policy'}; "
            f"{hardware.describe()}"
        )
        started = time.perf_counter()
        policy = load_generator(config.model.name, config, hardware)
        critic = load_generator(c.critic, config, hardware) if c.critic else policy
        rows = critique_revise(prompts, principles, policy, critic, c.samples_per_prompt, c.seed)
        sft, preferences = training_rows(rows, c.pairs)
        for file, content in zip(OUTPUTS, (rows, sft, preferences)):
            atomic_write_text(run.file(file), _jsonl(content))
        summary, table = summarize(rows, sft, preferences, len(prompts))
        summary.update(
            method="constitutional",
            model=config.model.name,
            critic=c.critic or config.model.name,
            seconds=round(time.perf_counter() - started, 1),
        )
        header = ["principle", "rows", "changed", "original satisfies", "revision satisfies"]
        finish_run(run, config, summary, tables=[("Principles", table, header)])
    out = Console()
    view = Table(*header, title=f"constitutional {run.name}")
    for row in table:
        view.add_row(*(fmt("—" if v is None else v) for v in row))
    out.print(view)
    out.print(
        ", ".join(
            f"{k} {fmt(v)}" for k, v in summary.items() if k not in ("method", "model", "critic", "mlflow_run_id")
        )
    )
    out.print(
        f"run directory: [bold]{run.path.resolve()}[/] (train on sft.jsonl with `data.format: chat`, on "
        "preferences.jsonl with `data.format: preference` and `training.objective: dpo`)"
    )
    return run
