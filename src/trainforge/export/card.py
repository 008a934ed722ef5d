"""The model card (README.md, Hugging Face conventions) of a finished run's model folders and exports: the Hub's
metadata, then what the folder holds, how it was trained (base, method, objective), on which data (rows and
fingerprints per split), the before/after scores, intended use (a default the user should edit), how to load it
(peft, transformers, onnxruntime, llama.cpp, Ollama: whichever apply) and the training config.

It reads the run (config.yaml, run.json's `data` block, summary.json) and the folder (export.json, Modelfile), and
writes through `models.saving.write_model_card`, which also writes the short card a folder gets when it is saved."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from trainforge.config import RunConfig, load_config
from trainforge.config.applies import METHOD_OPTIONS, applied_config
from trainforge.export.ollama import MODELFILE, NO_TEMPLATE
from trainforge.models.registry import public_name
from trainforge.models.saving import card_tags, write_model_card
from trainforge.run.finish import comparison_rows, fmt
from trainforge.tracking.rundir import RunDir

# kind of folder → (library_name, what it holds; {quantize} from its export.json)
KINDS = {
    "adapter": ("peft", "a peft adapter: load it onto the base model"),
    "own-adapter": (None, "trainforge's bottleneck adapter (method `adapter`), which only trainforge loads"),
    "model": ("transformers", "the fine-tuned model (transformers)"),
    "merged": ("transformers", "the base model with the trained adapter merged in (transformers)"),
    "quantized": ("transformers", "the fine-tuned model with {quantize} weights (transformers)"),
    "onnx": (None, "the fine-tuned model's logits as an ONNX graph{quantize}, for onnxruntime"),
    "gguf": (None, "the fine-tuned model as a GGUF file ({quantize}), for llama.cpp and Ollama"),
}
# what loads the weights of a quantized export, beside transformers
QUANTIZE_LIBRARY = {"int8": "torchao", "int4": "bitsandbytes"}
EXAMPLE_PROMPT = "Your prompt here"
INTENDED_USE = """\
<!-- Edit this section before sharing the model: what it is for, what it is not for, and the risks you know of. -->

This model was fine-tuned for the task of its training data (above) and scored only on that data's held-out test split.
It has not been evaluated for safety, bias or factual accuracy beyond that, and it keeps the limitations of its base
model. Its license is not set here: choose one the base model's license allows for derived models."""


def write_card(run: RunDir, folder: Path, kind: str) -> Path:
    """`folder/README.md`, the full model card of `folder`, a `kind` (see `KINDS`) of model of the finished `run`."""
    config = load_config(run.file("config.yaml"))
    summary_file = run.file("summary.json")
    summary = json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.is_file() else {}
    export = json.loads((folder / "export.json").read_text()) if (folder / "export.json").is_file() else {}
    library, holds = KINDS[kind]
    quantize = export.get("quantize")
    base = None if config.model.name == "scratch" else public_name(config.model.name)
    origin = f"`{base}` fine-tuned" if base else "A model trained from scratch"
    sections = [
        f"# {run.name}\n\n{origin} with trainforge ({config.method.name}"
        + (f", objective {config.training.objective}" if config.task == "lm" else "")
        + f"). This folder holds {holds.format(quantize=_quantize_label(kind, quantize))}.",
        _training(config, base, summary),
        _merged_from(run.info().get("merged_from")),
        _data(config, run.info().get("data")),
        _results(config, summary),
        f"## Intended use and limitations\n\n{INTENDED_USE}",
        _loading(kind, Path(folder), base, config, export, run),
        _config(config),
    ]
    tags = [*card_tags(config), *([quantize] if quantize else []), *([kind] if kind in ("onnx", "gguf") else [])]
    return write_model_card(
        folder,
        base,
        library,
        tags,
        "\n\n".join(section for section in sections if section) + "\n",
        pipeline_tag=_pipeline(config)[0],
        datasets=_hub_datasets(config) or None,
        license=_base_license(config.model.name),
    )


def write_run_cards(run: RunDir) -> list[Path]:
    """The full card of each model folder in the run directory (adapter/ or model/, merged/)."""
    from trainforge.tasks import registry

    registry.for_run(run).require("export", f"Run {run.path}")
    cards = []
    for name in ("adapter", "model", "merged"):
        folder = run.path / name
        if folder.is_dir():
            peft = name != "adapter" or (folder / "adapter_config.json").is_file()
            cards.append(write_card(run, folder, name if peft else "own-adapter"))
    return cards


def _merged_from(record: dict | None) -> str | None:
    """A `trainforge merge` run's sources: the adapters its weights combine, with their weights and data."""
    if not record:
        return None
    rows = "\n".join(
        f"| {Path(source['run']).name} | {source['weight']:g} | {source['rank']} | {source['data']} |"
        for source in record["sources"]
    )
    density = f", density {record['density']:g}" if record.get("density") is not None else ""
    return (
        f"## Merged from\n\nThese weights combine {len(record['sources'])} LoRA adapters with peft's "
        f"`add_weighted_adapter` (combination `{record['method']}`, rank {record['rank']}{density}):\n\n"
        f"| run | weight | rank | data |\n|---|---|---|---|\n{rows}"
    )


def _quantize_label(kind: str, quantize: str | None) -> str:
    if kind == "onnx":
        return f" ({quantize} weights)" if quantize else ""
    return quantize or ""


def _pipeline(config: RunConfig) -> tuple[str, str]:
    """(the Hub's pipeline tag, the transformers auto class suffix) of the run's model."""
    if config.task == "text-classification":
        return "text-classification", "SequenceClassification"
    if config.training.objective == "mlm":
        return "fill-mask", "MaskedLM"
    return "text-generation", "CausalLM"


def _hub_datasets(config: RunConfig) -> list[str]:
    """The Hub datasets the run read (`hf:owner/name[:config][@split]` sources), by id."""
    data = config.data
    paths = [data.path, data.train, data.validation, data.test, *(s.path for s in data.sources)]
    return list(dict.fromkeys(re.split("[:@]", p[3:])[0] for p in paths if p and p.startswith("hf:")))


def _base_license(name: str) -> str | None:
    """The license a local base model's own card names (a folder downloaded from the Hub has one), else None."""
    readme = Path(name).expanduser() / "README.md"
    if not readme.is_file():
        return None
    from huggingface_hub import ModelCard

    return ModelCard.load(readme).data.license


def _training(config: RunConfig, base: str | None, summary: dict) -> str:
    method = config.method.name
    options = config.method.model_dump(mode="json")
    settings = ", ".join(
        f"{key} {_value(value)}" for block in METHOD_OPTIONS.get(method, ()) for key, value in options[block].items()
    )
    lines = [f"- **Base model:** `{base}`" if base else "- **Base model:** none (trained from scratch)"]
    lines.append(f"- **Method:** {method}" + (f" ({settings})" if settings else ""))
    if config.task == "lm":
        lines.append(f"- **Objective:** {config.training.objective}")
    steps = f"{summary['steps']} steps" if "steps" in summary else f"{config.training.epochs:g} epochs"
    accumulation = config.training.gradient_accumulation_steps
    batch = f"{config.training.batch_size}" + (f" x {accumulation} accumulated" if accumulation > 1 else "")
    lines.append(f"- **Schedule:** {steps}, batch size {batch}, learning rate {config.training.learning_rate:g}")
    if "train_loss" in summary:
        lines.append(f"- **Final training loss:** {fmt(summary['train_loss'])}")
    if "trainable_params" in summary and "total_params" in summary:
        lines.append(f"- **Trainable parameters:** {summary['trainable_params']:,} of {summary['total_params']:,}")
    if "precision" in summary:
        lines.append(f"- **Precision:** {summary['precision']}")
    return "## Training\n\n" + "\n".join(lines)


def _value(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _data(config: RunConfig, recorded: dict | None) -> str:
    data = config.data
    if data.task:
        source = f"the bundled task `{data.task}` ({data.task_size} rows generated, seed {config.training.seed})"
    elif data.sources:
        source = "; ".join(f"`{s.path or s.task}`" for s in data.sources)
    elif data.path:
        source = (
            f"`{data.path}`, split by the fractions {data.split.train} / {data.split.validation} / {data.split.test}"
        )
    else:
        source = ", ".join(
            f"`{getattr(data, part)}` ({part})" for part in ("train", "validation", "test") if getattr(data, part)
        )
    lines = [f"Source: {source}."]
    if config.task == "lm":
        template = "the tokenizer's own" if data.template == "auto" else data.template
        lines.append(f"Chat template: {template}.")
    if recorded and recorded.get("fingerprints"):
        rows, prints = recorded.get("rows", {}), recorded["fingerprints"]
        lines += ["", "| split | rows | fingerprint |", "|---|---|---|"]
        lines += [f"| {part} | {rows.get(part, '—')} | `{fp}` |" for part, fp in prints.items()]
        lines += [
            "",
            "A fingerprint covers the split's rows, in order: their content and which rows of the source they are "
            "(the run's `data_splits.json` lists their ids).",
        ]
    else:
        lines.append("The run's run.json records no fingerprints of its data.")
    return "## Training data\n\n" + "\n".join(lines)


def _results(config: RunConfig, summary: dict) -> str:
    before = {k.removeprefix("before."): v for k, v in summary.items() if k.startswith("before.")}
    after = {k.removeprefix("after."): v for k, v in summary.items() if k.startswith("after.")}
    if not after:
        return "## Results\n\nThe run recorded no scores of its model."
    header, rows, when = "| metric | this model |\n|---|---|", [[k, fmt(v)] for k, v in after.items()], ""
    if before:  # the run scored its base model too
        header, rows = "| metric | base model | this model |\n|---|---|---|", comparison_rows(before, after)
        when = ", before training (the base model) and after"
    sampled = config.evaluation.max_samples if config.task == "lm" and config.evaluation.generation else None
    scope = f" (generation scores on its first {sampled} rows)" if sampled else ""
    table = "\n".join([header, *(f"| {' | '.join(row)} |" for row in rows)])
    return f"## Results\n\nOn the run's held-out test split{scope}{when}:\n\n{table}"


def _loading(kind: str, folder: Path, base: str | None, config: RunConfig, export: dict, run: RunDir) -> str:
    head = _pipeline(config)[1]
    auto = f"AutoModelFor{head}"
    where = str(folder)
    if kind == "adapter":
        labels = _head_arguments(run) if head == "SequenceClassification" else ""
        local = [
            "from peft import PeftModel",
            f"from transformers import {auto}, AutoTokenizer",
            "",
            f"base = {auto}.from_pretrained({base or 'path/to/base'!r}{labels})",
            f"model = PeftModel.from_pretrained(base, {where!r})",
            f"tokenizer = AutoTokenizer.from_pretrained({where!r})",
        ]
        blocks = [
            "With your own copy of the base model (a folder or a Hub id):",
            _python(*local),
            "Then:",
            _use(config),
        ]
        if head != "MaskedLM":  # peft has no AutoPeftModel class for masked LMs
            hub = [
                f"from peft import AutoPeftModelFor{head}",
                "from transformers import AutoTokenizer",
                "",
                f"model = AutoPeftModelFor{head}.from_pretrained({where!r}{labels})",
                f"tokenizer = AutoTokenizer.from_pretrained({where!r})",
            ]
            blocks[:0] = ["With the Hub reachable, peft downloads the base model the adapter names:", _python(*hub)]
    elif kind == "own-adapter":
        blocks = [
            f"Load it with trainforge from the run directory: `trainforge predict {run.name} --data FILE` or "
            f"`trainforge serve {run.name}`. `trainforge export {run.name} --quantize bf16` (or `--format onnx`) "
            "writes a model that other tools load, with its own card."
        ]
    elif kind in ("model", "merged", "quantized"):
        needs = QUANTIZE_LIBRARY.get(export.get("quantize"))
        blocks = [
            "With transformers" + (f" (and {needs}, which holds the quantized weights):" if needs else ":"),
            _python(
                f"from transformers import {auto}, AutoTokenizer",
                "",
                f"model = {auto}.from_pretrained({where!r})",
                f"tokenizer = AutoTokenizer.from_pretrained({where!r})",
                "",
                _use(config, fenced=False),
            ),
        ]
    elif kind == "onnx":
        blocks = [
            "With onnxruntime (the graph maps `input_ids` and `attention_mask` to logits; it has no KV cache):",
            _python(
                "import onnxruntime",
                "from transformers import AutoTokenizer",
                "",
                f"tokenizer = AutoTokenizer.from_pretrained({where!r})",
                f"session = onnxruntime.InferenceSession({str(folder / 'model.onnx')!r})",
                f"batch = tokenizer([{EXAMPLE_PROMPT!r}], return_tensors='np')",
                "inputs = {name: batch[name] for name in ('input_ids', 'attention_mask')}",
                "(logits,) = session.run(None, inputs)",
            ),
        ]
    else:  # gguf
        gguf = str(folder / export.get("file", "model.gguf"))
        name = re.sub(r"[^a-z0-9._-]+", "-", run.name.lower()).strip("-") or "model"  # what Ollama accepts
        modelfile = folder / MODELFILE
        no_template = modelfile.is_file() and NO_TEMPLATE in modelfile.read_text(encoding="utf-8")
        blocks = [
            "With llama.cpp (the file carries the run's chat template):",
            f"```sh\nllama-cli -m {gguf} -cnv\n```",
            "With llama-cpp-python:",
            _python(
                "from llama_cpp import Llama",
                "",
                f"llm = Llama(model_path={gguf!r})",
                f"reply = llm.create_chat_completion(messages=[{{'role': 'user', 'content': {EXAMPLE_PROMPT!r}}}])",
                "print(reply['choices'][0]['message']['content'])",
            ),
            f"With Ollama, from the `{MODELFILE}` beside the file (the chat template as Ollama's Go template, the stop "
            "tokens and the system prompt):"
            + (
                f" **it has no TEMPLATE**: this model's chat template is none trainforge converts (see the comment in "
                f"`{MODELFILE}`), so write one or Ollama guesses it."
                if no_template
                else ""
            ),
            f"```sh\ncd {folder}\nollama create {name} -f {MODELFILE}\nollama run {name}\n```",
        ]
    return "## How to load\n\n" + "\n\n".join(blocks)


def _head_arguments(run: RunDir) -> str:
    """The `from_pretrained` arguments that give a base model the run's classification head (its labels)."""
    from trainforge.tasks.text_classification.task import LABELS_FILE

    labels = json.loads(run.file(LABELS_FILE).read_text(encoding="utf-8"))
    problem = ", problem_type='multi_label_classification'" if labels["multi_label"] else ""
    return f", id2label={dict(enumerate(labels['classes']))!r}{problem}"


def _python(*lines: str) -> str:
    return "```python\n" + "\n".join(lines) + "\n```"


def _use(config: RunConfig, fenced: bool = True) -> str:
    """Python that runs the loaded `model` and `tokenizer` on an example input."""
    pipeline, _ = _pipeline(config)
    if pipeline == "text-generation":
        lines = [
            f"messages = [{{'role': 'user', 'content': {EXAMPLE_PROMPT!r}}}]",
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors='pt', "
            "return_dict=True)",
            "output = model.generate(**inputs, max_new_tokens=128)",
            "print(tokenizer.decode(output[0, inputs['input_ids'].shape[1] :], skip_special_tokens=True))",
        ]
    else:
        example = (
            "f'Paris is the {tokenizer.mask_token} of France.'" if pipeline == "fill-mask" else repr(EXAMPLE_PROMPT)
        )
        lines = [
            "from transformers import pipeline",
            "",
            f"run = pipeline({pipeline!r}, model=model, tokenizer=tokenizer)",
            f"print(run({example}))",
        ]
    return _python(*lines) if fenced else "\n".join(lines)


def _config(config: RunConfig) -> str:
    """The config sections this kind of run reads (config/applies.py), collapsed."""
    text = yaml.safe_dump(applied_config(config), sort_keys=False, allow_unicode=True)
    return (
        "## Training configuration\n\n<details>\n<summary>The trainforge config sections this run read</summary>\n\n"
        f"```yaml\n{text}```\n\n</details>"
    )
