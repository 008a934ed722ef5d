"""Command line: parse, load config, call the pipeline, print a summary. Errors print as one paragraph."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from trainforge.errors import TrainforgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Config-driven training and fine-tuning.")
runs_app = typer.Typer(no_args_is_help=True, help="The run registry: list, show, compare.")
data_app = typer.Typer(no_args_is_help=True, help="Look at data before training on it.")
app.add_typer(runs_app, name="runs")
app.add_typer(data_app, name="data")
out = Console()
RECIPES = Path(__file__).parent / "recipes"


@app.callback()
def options(trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Load pickle (joblib) models that "
                                              "trainforge did not record writing, e.g. dropped into a run by hand; "
                                              "loading a pickle runs the code it holds.")):
    """Config-driven training and fine-tuning."""
    if trust_pickle:
        import os

        from trainforge.classical.artifacts import TRUST_ENV

        os.environ[TRUST_ENV] = "1"


@app.command()
def train(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. training.learning_rate=1e-4"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its last checkpoint."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Data-parallel processes on this machine (torchrun; gloo on "
                              "CPU, NCCL on GPUs); training.batch_size is per process."),
):
    """Train / fine-tune a model as the config says; writes runs/<name>/."""
    import os

    from trainforge.pipeline import train_from_file

    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # this process launches; the workers run without --nproc
        from trainforge import distributed
        from trainforge.config import load_config
        from trainforge.config.loader import read_yaml, with_overrides

        if "stages" in with_overrides(read_yaml(config), overrides or []):
            distributed.refuse_stages(config)
        distributed.check_supported(load_config(config, overrides or []), str(config))
        code = distributed.launch(nproc, ["train", str(config), *(overrides or []), *(["--resume"] if resume else [])])
        raise typer.Exit(code)
    train_from_file(config, overrides or [], resume=resume)


@app.command()
def tune(
    config: Path = typer.Argument(..., help="Run config (YAML) whose `tuning:` section says what to search."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. tuning.trials=50"),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="grid | random | bayes (TPE)."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Trials in the study, all workers together."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna RDB URL shared by workers (PostgreSQL for many machines)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name; workers with the same name share trials."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes on this machine."),
    worker_index: int = typer.Option(0, "--worker-index", min=0, help="Distinct per machine: seeds the samplers apart."),
    resume: bool = typer.Option(False, "--resume", help="Continue the killed / crashed tuning run of this config: "
                                "finished trials are kept, interrupted ones run again, up to the trial budget."),
):
    """Hyperparameter search (Optuna) over a run config; writes the best config as a runnable YAML."""
    from trainforge.config import load_config
    from trainforge.tuning.run import tune as run_tune

    flags = {"strategy": strategy, "trials": trials, "storage": storage, "study_name": study}
    extra = [f"tuning.{k}={v}" for k, v in flags.items() if v is not None]
    run_tune(load_config(config, [*(overrides or []), *extra]), workers=workers, worker_index=worker_index * workers,
             resume=resume)


@app.command()
def active(
    config: Path = typer.Argument(..., help="Run config (YAML) with an `active:` section."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. active.rounds=20"),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Interactive mode: the filled-in to_label.csv of a "
                                          "run; adds its labels, refits and writes the next to_label.csv."),
):
    """Active learning: simulate (learning curve per query strategy) or interactive (label to_label.csv, go on)."""
    from trainforge.active.run import run_active
    from trainforge.config import load_config

    run_active(load_config(config, overrides or []), labels)


@app.command()
def constitutional(
    config: Path = typer.Argument(..., help="Run config (YAML): prompts in `data`, the policy in `model.name`, the "
                                  "`constitution:` section."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. constitution.samples_per_prompt=2"),
):
    """Constitutional AI data: answer, critique against a sampled principle, revise; writes revisions.jsonl
    (provenance), sft.jsonl (chat rows) and preferences.jsonl (revision ≻ original, for DPO)."""
    from trainforge.config import load_config
    from trainforge.constitutional import run_constitutional

    run_constitutional(load_config(config, overrides or []))


@app.command()
def demo(overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides of the demo config.")):
    """The quick start: LoRA-SFT of SmolLM2-135M-Instruct on the bundled dates→JSON task, before/after table."""
    from trainforge.pipeline import train_from_file

    train_from_file(RECIPES / "demo.yaml", overrides or [])


@app.command("eval")
def evaluate(
    run: str = typer.Argument(..., help="Run name or directory."),
    data: Optional[str] = typer.Option(None, "--data", help="Held-out file in the run's data format (tabular runs: CSV / Parquet; default: the run's test split)."),
    runs_dir: str = typer.Option("runs", help="Where runs live."),
):
    """Score a trained run on held-out data: LM runs perplexity and generation metrics, text-classification runs
    accuracy and F1, tabular runs their task metrics."""
    from trainforge.classical.predict import evaluate_file, evaluate_test_split, is_tabular
    from trainforge.multitask.run import evaluate_multitask_run, is_multitask
    from trainforge.pipeline import evaluate_run, fmt
    from trainforge.textclass.run import evaluate_classifier_run, is_text_classification
    from trainforge.tracking import find_run

    r = find_run(run, runs_dir)
    if is_tabular(r):
        scores = evaluate_file(r, data) if data else evaluate_test_split(r)
    elif is_multitask(r):
        scores = evaluate_multitask_run(r, data)
    elif is_text_classification(r):
        scores = evaluate_classifier_run(r, data)
    else:
        scores = evaluate_run(r, data)
    table = Table("metric", "value", title=f"evaluation of {r.name} on {data or 'its test split'}")
    for key, value in scores.items():
        table.add_row(key, fmt(value))
    out.print(table)


@app.command()
def export(
    run: str = typer.Argument(..., help="Run name or directory."),
    merge: bool = typer.Option(False, "--merge", help="Merge the LoRA adapter into the base model."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="Weight-only quantization for inference: int8 "
                                           "(torchao) | int4 (bitsandbytes NF4) | bf16; with --format onnx: int8; "
                                           "with --format gguf: f16 (default) | q8_0."),
    format: Optional[str] = typer.Option(None, "--format", help="onnx: a logits model for onnxruntime; "
                                         "gguf: a LLaMA model for llama.cpp."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Target folder (default: <run>/merged, <run>/export-<kind>)."),
    runs_dir: str = typer.Option("runs", help="Where runs live."),
):
    """Write a trained run in a form other tools load."""
    from trainforge.tracking import find_run

    if format not in (None, "onnx", "gguf"):
        raise TrainforgeError(f"Option `--format` = {format!r}: expected onnx or gguf.")
    if not (merge or quantize or format):
        raise TrainforgeError("Say what to export: --merge, --quantize int8|int4|bf16 or --format onnx|gguf.")
    r = find_run(run, runs_dir)
    if merge:
        from trainforge.export.merge import merge_run

        out.print(f"merged model written to [bold]{merge_run(r, out_dir)}[/]")
    if format == "onnx":
        from trainforge.export.onnx import export_run_onnx

        out.print(f"ONNX model written to [bold]{export_run_onnx(r, quantize, out_dir)}[/]")
    elif format == "gguf":
        from trainforge.export.gguf import export_run_gguf

        out.print(f"GGUF model written to [bold]{export_run_gguf(r, quantize, out_dir)}[/]")
    elif quantize:
        from trainforge.export.quantize import quantize_run

        out.print(f"{quantize} model written to [bold]{quantize_run(r, quantize, out_dir)}[/]")


@app.command()
def chat(run: str, runs_dir: str = "runs", max_new_tokens: int = 256, system: Optional[str] = None):
    """Talk to a trained generative run (empty line or Ctrl-D to quit)."""
    from trainforge.data.tokenize import render
    from trainforge.evaluation.lm import generate
    from trainforge.inference import load_run_model
    from trainforge.tracking import find_run

    model, tokenizer = load_run_model(find_run(run, runs_dir))
    messages = [{"role": "system", "content": system}] if system else []
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            break
        if not text:
            break
        messages.append({"role": "user", "content": text})
        answer = generate(model, tokenizer, [render(tokenizer, messages, add_generation_prompt=True)], max_new_tokens)[0]
        messages.append({"role": "assistant", "content": answer})
        out.print(f"[bold green]model>[/] {answer}")


@app.command()
def predict(
    run: str,
    data: str = typer.Option(..., "--data", help="Prompts file (LM runs), texts (text-classification runs) or a table (CSV / Parquet, tabular runs)."),
    out_file: Optional[str] = typer.Option(None, "--out", help="Output file (default: <data>.predictions.jsonl; tabular runs: <data>.predictions.csv)."),
    runs_dir: str = "runs",
    max_new_tokens: int = 128,
):
    """Generate an answer for every row of a file (text classification: its label; tabular runs: a prediction
    column, CSV or Parquet out)."""
    from trainforge.classical.predict import is_tabular
    from trainforge.tracking import find_run

    r = find_run(run, runs_dir)
    if is_tabular(r):
        from trainforge.classical.predict import predict_file as predict_table

        out.print(f"predictions written to [bold]{predict_table(r, data, out_file)}[/]")
        return
    from trainforge.multitask.run import is_multitask, predict_multitask_file

    if is_multitask(r):
        out.print(f"predictions written to [bold]{predict_multitask_file(r, data, out_file)}[/]")
        return
    from trainforge.textclass.run import is_text_classification, predict_classifier_file

    if is_text_classification(r):
        out.print(f"predictions written to [bold]{predict_classifier_file(r, data, out_file)}[/]")
        return
    from trainforge.inference import predict_file

    out.print(f"predictions written to [bold]{predict_file(r, data, out_file, max_new_tokens)}[/]")


@app.command()
def serve(
    run: str = typer.Argument(..., help="Run name or directory."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: every interface; set an API key)."),
    port: int = typer.Option(8000, help="TCP port."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="TRAINFORGE_API_KEY",
                                          help="Require `Authorization: Bearer KEY` on /v1 requests."),
    max_tokens_limit: int = typer.Option(4096, min=1, help="Largest max_tokens a request may ask for."),
    max_body_bytes: int = typer.Option(1_000_000, min=1, help="Largest request body accepted (413 beyond)."),
    runs_dir: str = "runs",
):
    """OpenAI-compatible HTTP API for a run: /v1/chat/completions, /v1/completions (streaming), /v1/models for
    generative runs; /v1/predict for text-classification and tabular runs; /health."""
    from trainforge.serve import serve as run_server
    from trainforge.tracking import find_run

    run_server(find_run(run, runs_dir), host, port, api_key, max_tokens_limit=max_tokens_limit,
               max_body_bytes=max_body_bytes)


@app.command()
def models():
    """The known model aliases."""
    from trainforge.models import ALIASES

    table = Table("alias", "kind", "what")
    for alias in ALIASES.values():
        table.add_row(alias.name, alias.kind, alias.description)
    out.print(table)


# runs -------------------------------------------------------------------------------------------------------------
SUMMARY_KEYS = ("method", "model", "steps", "train_loss", "after.exact_match", "after.perplexity", "score")


def _headline(summary: dict) -> str:
    """Tabular and tuning runs: their metric on test (else CV, else the best trial) in one cell."""
    metric = summary.get("metric")
    for key in (f"test.{metric}", f"cv.{metric}.mean", f"best.{metric}", metric):
        if metric and isinstance(summary.get(key), (int, float)):
            return f"{key} {summary[key]:.4g}"
    return ""


@runs_app.command("list")
def runs_list(runs_dir: str = "runs"):
    """All runs with their status and headline metrics."""
    from trainforge.pipeline import fmt
    from trainforge.tracking import list_runs
    from trainforge.tracking.rundir import read_json

    table = Table("run", "status", *SUMMARY_KEYS)
    for run in list_runs(runs_dir):
        summary = read_json(run.file("summary.json")) if run.file("summary.json").is_file() else {}
        summary.setdefault("score", _headline(summary))
        table.add_row(run.name, run.status, *(fmt(summary.get(k, "")) for k in SUMMARY_KEYS))
    out.print(table)


@runs_app.command("show")
def runs_show(run: str, runs_dir: str = "runs"):
    """One run: status, summary, where its files are."""
    from trainforge.pipeline import fmt
    from trainforge.tracking import find_run
    from trainforge.tracking.rundir import read_json

    r = find_run(run, runs_dir)
    table = Table("key", "value", title=f"run {r.name}")
    for key, value in r.info().items():
        table.add_row(key, fmt(value))
    if r.file("summary.json").is_file():
        for key, value in read_json(r.file("summary.json")).items():
            table.add_row(key, fmt(value))
    out.print(table)
    out.print(f"directory: {r.path.resolve()}")


@runs_app.command("compare")
def runs_compare(a: str, b: str, runs_dir: str = "runs"):
    """Two runs side by side: summaries and the config keys that differ."""
    from trainforge.config import load_config
    from trainforge.pipeline import fmt
    from trainforge.tracking import find_run
    from trainforge.tracking.mlflow_log import flatten
    from trainforge.tracking.rundir import read_json

    ra, rb = find_run(a, runs_dir), find_run(b, runs_dir)
    sa, sb = (read_json(r.file("summary.json")) if r.file("summary.json").is_file() else {} for r in (ra, rb))
    table = Table("key", ra.name, rb.name, title="summary")
    for key in dict.fromkeys([*sa, *sb]):
        table.add_row(key, fmt(sa.get(key, "—")), fmt(sb.get(key, "—")))
    out.print(table)
    ca, cb = (flatten(load_config(r.file("config.yaml")).model_dump(mode="json")) for r in (ra, rb))
    diff = Table("config key", ra.name, rb.name, title="config differences")
    for key in sorted(set(ca) | set(cb)):
        if ca.get(key) != cb.get(key):
            diff.add_row(key, fmt(ca.get(key, "—")), fmt(cb.get(key, "—")))
    out.print(diff)


# data -------------------------------------------------------------------------------------------------------------
@data_app.command("inspect")
def data_inspect(
    file: str,
    format: str = typer.Option("chat", "--format", help="text | alpaca | chat | preference"),
    model: str = typer.Option("smollm2-135m-instruct", help="Tokenizer to count tokens with."),
    examples: int = typer.Option(2, help="How many rendered examples to show."),
):
    """Counts, token-length percentiles and a few rendered examples."""
    from trainforge.data.inspect import inspect_file

    inspect_file(file, format, model, examples, out)


@data_app.command("validate")
def data_validate(file: str, format: str = typer.Option("chat", "--format", help="text | alpaca | chat | preference")):
    """Check every row; the first bad one is reported with its row number."""
    from trainforge.data.formats import normalize_rows
    from trainforge.data.readers import read_rows

    rows = normalize_rows(read_rows(file), format, file)
    out.print(f"[green]ok:[/] {len(rows)} valid {format} rows in {file}")


def main() -> None:
    try:
        app(standalone_mode=False)
    except TrainforgeError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/]: resume with `trainforge train CONFIG --resume`")
        sys.exit(130)
    except (typer.Abort, typer.Exit) as err:
        sys.exit(getattr(err, "exit_code", 1))
    except Exception as err:  # click usage errors
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
