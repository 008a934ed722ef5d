"""Command line: parse, load config, call the pipeline, print a summary. Errors print as one paragraph."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from trainforge.errors import TrainforgeError, is_disk_full

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Config-driven training and fine-tuning.")
runs_app = typer.Typer(no_args_is_help=True, help="The run registry: list, show, compare.")
data_app = typer.Typer(no_args_is_help=True, help="Look at data before training on it.")
humaneval_app = typer.Typer(
    no_args_is_help=True, help="Human evaluation: export a blinded side-by-side sheet, import it filled."
)
app.add_typer(runs_app, name="runs")
app.add_typer(data_app, name="data")
config_app = typer.Typer(no_args_is_help=True, help="Configs from other tools.")
app.add_typer(humaneval_app, name="humaneval")
app.add_typer(config_app, name="config")
out = Console()
RECIPES = Path(__file__).parent / "recipes"


@app.callback()
def options(
    trust_pickle: bool = typer.Option(
        False,
        "--trust-pickle",
        help="Load pickle (joblib) models that trainforge on this machine did not sign (runs copied from "
        "elsewhere, or files dropped into a run by hand); loading a pickle runs the code it holds.",
    ),
):
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
    nproc: int = typer.Option(
        1,
        "--nproc",
        min=1,
        help="Data-parallel processes on this machine (torchrun; gloo on "
        "CPU, NCCL on GPUs); training.batch_size is per process.",
    ),
):
    """Train / fine-tune a model as the config says; writes runs/<name>/."""
    import os

    from trainforge.stages import train_from_file

    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # this process launches; the workers run without --nproc
        from trainforge import distributed
        from trainforge.config import load_config
        from trainforge.config.loader import read_yaml, with_overrides
        from trainforge.pipeline import check_data_parallel

        if "stages" in with_overrides(read_yaml(config), overrides or []):
            distributed.refuse_stages(config)
        check_data_parallel(load_config(config, overrides or []), str(config))
        code = distributed.launch(nproc, ["train", str(config), *(overrides or []), *(["--resume"] if resume else [])])
        raise typer.Exit(code)
    train_from_file(config, overrides or [], resume=resume)


@app.command()
def tune(
    config: Path = typer.Argument(..., help="Run config (YAML) whose `tuning:` section says what to search."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. tuning.trials=50"),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="grid | random | bayes (TPE)."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Trials in the study, all workers together."),
    storage: Optional[str] = typer.Option(
        None, "--storage", help="Optuna RDB URL shared by workers (PostgreSQL for many machines)."
    ),
    study: Optional[str] = typer.Option(None, "--study", help="Study name; workers with the same name share trials."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes on this machine."),
    worker_index: int = typer.Option(
        0, "--worker-index", min=0, help="Distinct per machine: seeds the samplers apart."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the killed / crashed tuning run of this config: "
        "finished trials are kept, interrupted ones run again, up to the trial budget.",
    ),
):
    """Hyperparameter search (Optuna) over a run config; writes the best config as a runnable YAML."""
    from trainforge.config import load_config
    from trainforge.tuning.run import tune as run_tune

    flags = {"strategy": strategy, "trials": trials, "storage": storage, "study_name": study}
    extra = [f"tuning.{k}={v}" for k, v in flags.items() if v is not None]
    run_tune(
        load_config(config, [*(overrides or []), *extra]),
        workers=workers,
        worker_index=worker_index * workers,
        resume=resume,
    )


@app.command()
def active(
    config: Path = typer.Argument(..., help="Run config (YAML) with an `active:` section."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. active.rounds=20"),
    labels: Optional[Path] = typer.Option(
        None,
        "--labels",
        help="Interactive mode: the filled-in to_label.csv of a "
        "run; adds its labels, refits and writes the next to_label.csv.",
    ),
):
    """Active learning: simulate (learning curve per query strategy) or interactive (label to_label.csv, go on)."""
    from trainforge.active.run import run_active
    from trainforge.config import load_config

    run_active(load_config(config, overrides or []), labels)


@app.command()
def constitutional(
    config: Path = typer.Argument(
        ..., help="Run config (YAML): prompts in `data`, the policy in `model.name`, the `constitution:` section."
    ),
    overrides: Optional[List[str]] = typer.Argument(
        None, help="key=value overrides, e.g. constitution.samples_per_prompt=2"
    ),
):
    """Constitutional AI data: answer, critique against a sampled principle, revise; writes revisions.jsonl
    (provenance), sft.jsonl (chat rows) and preferences.jsonl (revision ≻ original, for DPO)."""
    from trainforge.config import load_config
    from trainforge.constitutional import run_constitutional

    run_constitutional(load_config(config, overrides or []))


@app.command()
def demo(overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides of the demo config.")):
    """The quick start: LoRA-SFT of SmolLM2-135M-Instruct on the bundled dates→JSON task, before/after table."""
    from trainforge.stages import train_from_file

    train_from_file(RECIPES / "demo.yaml", overrides or [])


@app.command("eval")
def evaluate(
    run: str = typer.Argument(
        ..., help="Run name or directory (with --benchmark or --harness also a model alias or folder)."
    ),
    data: Optional[str] = typer.Option(
        None,
        "--data",
        help="Held-out file in the run's data format (tabular runs: CSV / Parquet; default: the run's test split).",
    ),
    runs_dir: str = typer.Option("runs", help="Where runs live."),
    benchmark: Optional[str] = typer.Option(
        None,
        "--benchmark",
        help="Multiple-choice benchmark: a CSV / JSONL file "
        "(question, choices, answer, subject) or a bundled one (basics, arithmetic, "
        "unit-conversion, capitals, dates).",
    ),
    fewshot: int = typer.Option(0, "--fewshot", min=0, help="Solved examples in each benchmark prompt."),
    fewshot_from: Optional[str] = typer.Option(
        None,
        "--fewshot-from",
        help="Dev file the examples come from (default: the benchmark itself, never the question asked).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seeds the bundled questions and the few-shot draw."),
    per_subject: int = typer.Option(25, "--per-subject", min=1, help="Questions per subject of a bundled benchmark."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    out_file: Optional[str] = typer.Option(
        None,
        "--out",
        help="Results JSON (default: the run's benchmark-<name>.json; models: evals/<model>-<name>.json).",
    ),
    episodes: Optional[int] = typer.Option(
        None, "--episodes", min=1, help="rl-agent runs: episodes to replay (default: the run's agent.eval_episodes)."
    ),
    prompt_format: str = typer.Option(
        "plain",
        "--prompt-format",
        help="Benchmark prompts: plain (question, then "
        "'Answer: <choice>') or chat (the question as a user turn of the tokenizer's "
        "chat template, each choice scored as the assistant's reply).",
    ),
    baseline: Optional[str] = typer.Option(
        None,
        "--baseline",
        help="With --benchmark: also score this run or model "
        "(e.g. the base model) the same way and print both accuracies per subject "
        "with the difference; its results go to its own default file.",
    ),
    harness: Optional[str] = typer.Option(
        None,
        "--harness",
        help="EleutherAI lm-evaluation-harness tasks, comma-separated: the bundled basics, tasks of "
        "--harness-include folders, or the harness's own where their data is on this machine (the Hub is off). "
        "Results: the run's harness-<tasks>.json, its summary.json (harness.<task>.<metric>) and MLflow record.",
    ),
    harness_include: Optional[List[Path]] = typer.Option(
        None,
        "--harness-include",
        help="Folder of your own harness task YAMLs (repeatable); name its tasks in --harness.",
    ),
):
    """Score a trained run on held-out data: LM runs perplexity and generation metrics, text-classification runs
    accuracy and F1, tabular runs their task metrics, rl-agent runs replay their policy (mean return), gan runs
    score fresh samples. With --benchmark: multiple-choice accuracy by log-likelihood,
    for a run or a base model alike (--baseline BASE: before/after in one table). With --harness: tasks of
    EleutherAI's lm-evaluation-harness over local files, on a run or a base model."""
    if harness:
        from trainforge.evaluation.harness import harness_source

        unused = {"--benchmark": benchmark, "--baseline": baseline, "--fewshot-from": fewshot_from, "--data": data}
        unused.update({"--episodes": episodes, "--prompt-format chat": prompt_format != "plain"})
        if any(unused.values()):
            raise TrainforgeError(
                f"--harness does not take {', '.join(k for k, v in unused.items() if v)}: a harness task names its "
                "data, prompts and few-shot examples in its YAML. Run --benchmark on its own for those."
            )
        done = harness_source(
            run, harness, harness_include or [], fewshot, seed, per_subject, batch_size, out_file, runs_dir
        )
        table = Table("task", "metric", "value", "stderr", title=f"{done['model']} on lm-evaluation-harness")
        for task, metric, value, stderr in done["rows"]:
            table.add_row(task, metric, f"{value:.4f}", "" if stderr is None else f"{stderr:.4f}")
        out.print(table)
        if done["mlflow_error"]:
            out.print(f"[bold yellow]warning:[/] recording the scores in MLflow failed: {done['mlflow_error']}")
        out.print(f"results written to [bold]{done['path']}[/]" + (" and summary.json" if done["run"] else ""))
        return
    if benchmark:
        from trainforge.evaluation.benchmark import benchmark_source

        results, path = benchmark_source(
            run, benchmark, fewshot, fewshot_from, seed, per_subject, batch_size, out_file, runs_dir, prompt_format
        )
        setting = f"{results['benchmark']} ({fewshot}-shot, {prompt_format} prompts)"
        if baseline:
            from trainforge.evaluation.benchmark import compare

            before, before_path = benchmark_source(
                baseline, benchmark, fewshot, fewshot_from, seed, per_subject, batch_size, None, runs_dir, prompt_format
            )
            table = Table(
                "subject", "questions", before["model"], results["model"], "delta", title=f"accuracy on {setting}"
            )
            for row in compare(before, results):
                table.add_row(
                    row["subject"],
                    str(row["questions"]),
                    f"{row['before']:.3f}",
                    f"{row['after']:.3f}",
                    f"{row['delta']:+.3f}",
                )
            out.print(table)
            out.print(f"results written to [bold]{before_path}[/] and [bold]{path}[/]")
            return
        table = Table(
            "subject",
            "questions",
            "accuracy",
            "accuracy (per-token)",
            "chance",
            title=f"{results['model']} on {setting}",
        )
        for name, row in [*results["subjects"].items(), ("overall", results)]:
            table.add_row(
                name,
                str(row["questions"]),
                f"{row['accuracy']:.3f}",
                f"{row['accuracy_norm']:.3f}",
                f"{row['chance']:.3f}",
            )
        out.print(table)
        out.print(f"results written to [bold]{path}[/]")
        return
    from trainforge.pipeline import evaluate_run
    from trainforge.run.finish import fmt
    from trainforge.tracking import find_run

    r = find_run(run, runs_dir)
    scores = evaluate_run(r, data, episodes=episodes)
    table = Table("metric", "value", title=f"evaluation of {r.name} on {data or 'its test split'}")
    for key, value in scores.items():
        table.add_row(key, fmt(value))
    out.print(table)


def _rate(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@app.command()
def judge(
    a: str = typer.Argument(..., help="Run name / directory or model alias whose answers are A."),
    b: str = typer.Argument(..., help="The other run or model (B)."),
    prompts: str = typer.Option(..., "--prompts", help="Prompts file (CSV / JSONL with a `prompt` column)."),
    judge_model: str = typer.Option("smollm2-135m-instruct", "--judge", help="Judge: model alias, folder or run."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1),
    runs_dir: str = typer.Option("runs", help="Where runs live."),
    out_file: Optional[str] = typer.Option(None, "--out", help="Results JSON (default: evals/judge-A-vs-B.json)."),
):
    """LLM-as-judge: both answer every prompt; the judge compares each pair in both orders (A/B read from its
    next-token probabilities); a verdict that flips with the order is a tie. Win / tie / loss rates of A."""
    from trainforge.evaluation.judge import judge_sources

    results, path = judge_sources(a, b, prompts, judge_model, runs_dir, max_new_tokens, out_file)
    table = Table("", "value", title=f"{results['a']} vs {results['b']}, judged by {results['judge']}")
    for key in (
        "prompts",
        "win_rate",
        "tie_rate",
        "loss_rate",
        "first_position_rate",
        "win_rate_decided",
        "debiased_win_rate",
        "debiased_loss_rate",
    ):
        table.add_row(key, str(results[key]) if key == "prompts" else _rate(results[key]))
    if results["ci95"]:
        table.add_row("win_rate_decided 95% CI (Wilson)", f"{results['ci95'][0]:.3f} - {results['ci95'][1]:.3f}")
    out.print(table)
    out.print(f"results written to [bold]{path}[/]")


@humaneval_app.command("export")
def humaneval_export(
    a: str = typer.Argument(..., help="Run name / directory or model alias."),
    b: str = typer.Argument(..., help="The other run or model."),
    prompts: str = typer.Option(..., "--prompts", help="Prompts file (CSV / JSONL with a `prompt` column)."),
    out_dir: str = typer.Option(..., "--out", help="Folder for sheet.csv, sheet.html and key.json."),
    seed: int = typer.Option(0, "--seed", help="Seeds which side each model's answer is shown on."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1),
    runs_dir: str = typer.Option("runs", help="Where runs live."),
):
    """Blinded side-by-side sheet: sheet.csv and sheet.html for annotators, key.json (who is A / B) kept apart."""
    from trainforge.evaluation.humaneval import export_sources

    folder = export_sources(a, b, prompts, out_dir, seed, max_new_tokens, runs_dir)
    out.print(
        f"give annotators [bold]{folder / 'sheet.html'}[/] or [bold]{folder / 'sheet.csv'}[/]; "
        f"keep [bold]{folder / 'key.json'}[/] from them"
    )


@humaneval_app.command("import")
def humaneval_import(
    sheet: str = typer.Argument(..., help="The filled sheet.csv (preference: A, B or tie on every row)."),
    key: Optional[str] = typer.Option(None, "--key", help="key.json of the export (default: next to the sheet)."),
):
    """Unblind a filled sheet: wins, ties, losses and the win rate (ties excluded) with a 95% Wilson interval."""
    from trainforge.evaluation.humaneval import import_sheet
    from trainforge.tracking import atomic_write_json

    results = import_sheet(sheet, key)
    target = Path(sheet).with_name("results.json")
    atomic_write_json(target, results)
    table = Table("", "value", title=f"{results['a']} vs {results['b']}: human preferences")
    for k in ("rated", "wins", "ties", "losses"):
        table.add_row(k, str(results[k]))
    table.add_row("tie rate", _rate(results["tie_rate"]))
    table.add_row("win rate (ties excluded)", _rate(results["win_rate"]))
    if results["ci95"]:
        table.add_row("95% CI (Wilson)", f"{results['ci95'][0]:.3f} - {results['ci95'][1]:.3f}")
    out.print(table)
    out.print(f"results written to [bold]{target}[/]")


@app.command()
def export(
    run: str = typer.Argument(..., help="Run name or directory."),
    merge: bool = typer.Option(False, "--merge", help="Merge the LoRA adapter into the base model."),
    quantize: Optional[str] = typer.Option(
        None,
        "--quantize",
        help="Weight-only quantization for inference: int8 "
        "(torchao) | int4 (bitsandbytes NF4) | bf16; with --format onnx: int8; "
        "with --format gguf: f16 (default) | q8_0.",
    ),
    format: Optional[str] = typer.Option(
        None, "--format", help="onnx: a logits model for onnxruntime; gguf: a LLaMA model for llama.cpp."
    ),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Target folder (default: <run>/merged, <run>/export-<kind>)."
    ),
    runs_dir: str = typer.Option("runs", help="Where runs live."),
):
    """Write a trained run in a form other tools load, each with its model card (README.md; a GGUF file also with an
    Ollama Modelfile). Every export, and `export RUN` alone, writes the full card of the run's own model folders too
    (adapter/ or model/, merged/)."""
    from trainforge.export.card import write_card, write_run_cards
    from trainforge.tracking import find_run

    if format not in (None, "onnx", "gguf"):
        raise TrainforgeError(f"Option `--format` = {format!r}: expected onnx or gguf.")
    r = find_run(run, runs_dir)
    if merge:
        from trainforge.inference.merge import merge_run

        merged = merge_run(r, out_dir)
        if out_dir:  # <run>/merged gets its card with the run's own folders, below
            write_card(r, merged, "merged")
        out.print(f"merged model written to [bold]{merged}[/]")
    if format == "onnx":
        from trainforge.export.onnx import export_run_onnx

        out.print(f"ONNX model and its model card written to [bold]{export_run_onnx(r, quantize, out_dir)}[/]")
    elif format == "gguf":
        from trainforge.export.gguf import export_run_gguf

        path = export_run_gguf(r, quantize, out_dir)
        out.print(f"GGUF model written to [bold]{path}[/], its model card and Ollama Modelfile beside it")
    elif quantize:
        from trainforge.export.quantize import quantize_run

        out.print(f"{quantize} model and its model card written to [bold]{quantize_run(r, quantize, out_dir)}[/]")
    cards = write_run_cards(r)
    if not (cards or merge or quantize or format):
        raise TrainforgeError(f"Run {r.path} has no model folder (adapter/, model/, merged/) to write a card for.")
    for card in cards:
        out.print(f"model card written to [bold]{card}[/]")


@app.command()
def merge(
    runs: List[str] = typer.Argument(..., help="LoRA runs of one base model (names or directories)."),
    method: str = typer.Option(
        "ties",
        "--method",
        help="peft's combination: ties, dare_linear, dare_ties, magnitude_prune (on the A and B factors: same rank); "
        "cat (exactly Σ weight·ΔW, rank the sum of theirs); linear (A and B each summed, so ΔW gains cross terms: "
        "same rank); svd, ties_svd, dare_linear_svd, dare_ties_svd, magnitude_prune_svd (on ΔW, truncated to the "
        "largest rank).",
    ),
    weights: Optional[str] = typer.Option(
        None,
        "--weights",
        help="One weight per run, comma-separated (default 1 each: ties averages where signs agree; cat / linear / "
        "svd add, so 0.5,0.5 averages two).",
    ),
    density: Optional[float] = typer.Option(
        None, "--density", help="ties / dare / magnitude_prune: share of each adapter's entries kept (default 0.5)."
    ),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="The merged run's folder (default: <runs-dir>/merge-<method>-<time>)."
    ),
    runs_dir: str = typer.Option("runs", help="Where runs live."),
):
    """Combine the LoRA adapters of several runs into one (peft's add_weighted_adapter), written as a run that
    eval, predict, chat, serve and export take like any LoRA run."""
    from trainforge.inference.adapter_merge import merge_adapters
    from trainforge.run.directory import default_name
    from trainforge.tracking import find_run

    try:
        parsed = None if weights is None else [float(w) for w in weights.split(",")]
    except ValueError:
        raise TrainforgeError(
            f"Option `--weights` = {weights!r}: expected numbers separated by commas, e.g. 0.7,0.3."
        ) from None
    sources = [find_run(r, runs_dir) for r in runs]
    merged = merge_adapters(
        sources, out_dir or Path(runs_dir) / default_name(f"merge-{method}"), method, parsed, density
    )
    record = merged.info()["merged_from"]
    table = Table("run", "weight", "rank", "data", title=f"{record['method']} merge, rank {record['rank']}")
    for source in record["sources"]:
        table.add_row(source["run"], f"{source['weight']:g}", str(source["rank"]), str(source["data"]))
    out.print(table)
    if record["density"] is not None:
        out.print(f"density {record['density']:g}" + (f", seed {record['seed']}" if record["seed"] is not None else ""))
    out.print(f"merged run written to [bold]{merged.path}[/] (trainforge eval / predict / serve / export take it)")


@app.command()
def chat(run: str, runs_dir: str = "runs", max_new_tokens: int = 256, system: Optional[str] = None):
    """Talk to a trained generative run (empty line or Ctrl-D to quit)."""
    from trainforge.data.tokenize import render
    from trainforge.evaluation.lm import generate
    from trainforge.inference import load_run_model
    from trainforge.tasks import registry
    from trainforge.tracking import find_run

    r = find_run(run, runs_dir)
    registry.for_run(r).require("generate", f"Run {r.path}")
    model, tokenizer = load_run_model(r)
    messages = [{"role": "system", "content": system}] if system else []
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            break
        if not text:
            break
        messages.append({"role": "user", "content": text})
        answer = generate(model, tokenizer, [render(tokenizer, messages, add_generation_prompt=True)], max_new_tokens)[
            0
        ]
        messages.append({"role": "assistant", "content": answer})
        out.print(f"[bold green]model>[/] {answer}")


@app.command()
def predict(
    run: str,
    data: str = typer.Option(
        ...,
        "--data",
        help="Prompts file (LM runs), texts (text-classification runs) or a table (CSV / Parquet, tabular runs).",
    ),
    out_file: Optional[str] = typer.Option(
        None, "--out", help="Output file (default: <data>.predictions.jsonl; tabular runs: <data>.predictions.csv)."
    ),
    runs_dir: str = "runs",
    max_new_tokens: int = 128,
):
    """Generate an answer for every row of a file (text classification: its label; tabular runs: a prediction
    column, CSV or Parquet out)."""
    from trainforge.tasks import registry
    from trainforge.tracking import find_run

    r = find_run(run, runs_dir)
    predict_rows = registry.for_run(r).hook("predict", f"Run {r.path}")
    out.print(f"predictions written to [bold]{predict_rows(r, data, out_file, max_new_tokens=max_new_tokens)}[/]")


@app.command()
def serve(
    run: str = typer.Argument(..., help="Run name or directory."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: every interface; set an API key)."),
    port: int = typer.Option(8000, help="TCP port."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="TRAINFORGE_API_KEY", help="Require `Authorization: Bearer KEY` on /v1 requests."
    ),
    max_tokens_limit: int = typer.Option(4096, min=1, help="Largest max_tokens a request may ask for."),
    max_body_bytes: int = typer.Option(1_000_000, min=1, help="Largest request body accepted (413 beyond)."),
    backend: str = typer.Option(
        "auto",
        "--backend",
        help="What generates: torch, llama.cpp (extra `gguf`; serves the run's GGUF export, made on first use), or "
        "auto: llama.cpp where it is installed and can load the run, else torch.",
    ),
    runs_dir: str = "runs",
):
    """OpenAI-compatible HTTP API for a run: /v1/chat/completions, /v1/completions (streaming), /v1/models for
    generative runs; /v1/predict for text-classification and tabular runs; /health."""
    from trainforge.serve import serve as run_server
    from trainforge.tracking import find_run

    run_server(
        find_run(run, runs_dir),
        host,
        port,
        api_key,
        backend,
        max_tokens_limit=max_tokens_limit,
        max_body_bytes=max_body_bytes,
    )


@app.command()
def ui(
    host: str = typer.Option(
        "127.0.0.1", help="Interface to listen on (anything but localhost lets others launch runs)."
    ),
    port: int = typer.Option(8765, help="TCP port."),
    runs_dir: str = typer.Option("runs", help="Where runs live (the same folder the CLI reads)."),
    examples: Optional[Path] = typer.Option(
        None, help="Folder of example configs the form can start from (default: ./examples when it exists)."
    ),
):
    """Web dashboard: launch runs from a form built from the config schema, live curves, runs table and
    comparison, chat with generative runs, tuning studies."""
    from trainforge.ui import run_ui

    run_ui(runs_dir, host, port, examples)


@app.command()
def models():
    """The known model aliases."""
    from trainforge.models import ALIASES

    table = Table("alias", "kind", "what")
    for alias in ALIASES.values():
        table.add_row(alias.name, alias.kind, alias.description)
    out.print(table)


# runs -------------------------------------------------------------------------------------------------------------
@runs_app.command("list")
def runs_list(runs_dir: str = "runs"):
    """All runs with their status and headline metrics."""
    from trainforge.run.finish import fmt
    from trainforge.tracking import list_runs
    from trainforge.tracking.registry import SUMMARY_KEYS, listed_summary

    runs = list_runs(runs_dir)
    # A run's name is how every other command finds it: never cut. Metric columns that do not fit beside it are
    # left out, and the caption says which.
    name_width = max((len(r.name) for r in runs), default=3)
    fit = max(0, (out.width - name_width - 4 - 12) // 12)  # borders; status and each metric about 12 columns
    shown, left_out = SUMMARY_KEYS[:fit], SUMMARY_KEYS[fit:]
    caption = f"not shown (too narrow): {', '.join(left_out)}; see `runs show RUN`" if left_out else None
    table = Table(title=f"runs in {runs_dir}", caption=caption)
    table.add_column("run", no_wrap=True, min_width=name_width)
    for key in ("status", *shown):
        table.add_column(key, overflow="ellipsis")
    for run in runs:
        summary = listed_summary(run)
        table.add_row(run.name, run.status, *(fmt(summary.get(k, "")) for k in shown))
    out.print(table)


@runs_app.command("show")
def runs_show(run: str, runs_dir: str = "runs"):
    """One run: status, summary, where its files are."""
    from trainforge.run.finish import fmt
    from trainforge.tracking import find_run
    from trainforge.tracking.registry import summary_of

    r = find_run(run, runs_dir)
    table = Table("key", "value", title=f"run {r.name}")
    for key, value in r.info().items():
        table.add_row(key, fmt(value))
    for key, value in summary_of(r).items():
        table.add_row(key, fmt(value))
    out.print(table)
    out.print(f"directory: {r.path.resolve()}")


@runs_app.command("compare")
def runs_compare(a: str, b: str, runs_dir: str = "runs"):
    """Two runs side by side: whether they trained on the same data, summaries and the config keys that differ."""
    from trainforge.run.finish import fmt
    from trainforge.tracking import find_run
    from trainforge.tracking.registry import compare, described_differences

    ra, rb = find_run(a, runs_dir), find_run(b, runs_dir)
    rows = compare(ra, rb)
    data = rows["data"]
    if data["differences"]:
        out.print(f"[bold yellow]different data:[/] {described_differences(data['differences'])}", highlight=False)
    elif data["recorded"]:
        out.print("[bold green]same data[/] (every split's fingerprint is equal)")
    else:
        out.print("data: neither run recorded fingerprints of its data")
    show = lambda v: "—" if v is None else fmt(v)  # noqa: E731
    table = Table("key", ra.name, rb.name, title="summary")
    for key, va, vb in rows["summary"]:
        table.add_row(key, show(va), show(vb))
    out.print(table)
    diff = Table("config key", ra.name, rb.name, title="config differences")
    for key, va, vb in rows["config"]:
        diff.add_row(key, show(va), show(vb))
    out.print(diff)


# data -------------------------------------------------------------------------------------------------------------
@data_app.command("inspect")
def data_inspect(
    file: str,
    format: str = typer.Option(
        "auto",
        "--format",
        help="auto | text | alpaca | chat | prompt-completion | prompt-only | preference | unpaired | input-output (auto: told from the fields).",
    ),
    model: str = typer.Option("smollm2-135m-instruct", help="Tokenizer to count tokens with."),
    examples: int = typer.Option(2, help="How many rendered examples to show."),
    show_mask: bool = typer.Option(
        False, "--show-mask", help="Highlight the tokens that train, and give their share of the file's tokens."
    ),
    template: str = typer.Option("auto", "--template", help="auto (the tokenizer's) | chatml | alpaca | llama3 | none"),
    train_on_inputs: bool = typer.Option(False, "--train-on-inputs", help="As training.train_on_inputs."),
    mask_history: bool = typer.Option(False, "--mask-history", help="As data.mask_history."),
):
    """Counts, token-length percentiles and a few rendered examples (with --show-mask: what trains)."""
    from trainforge.data.inspect import inspect_file
    from trainforge.data.templates import TEMPLATES
    from trainforge.data.tokenize import Masking

    if template != "auto" and template not in TEMPLATES:
        raise TrainforgeError(f"Option `--template` = {template!r}: expected auto, {', '.join(TEMPLATES)}.")
    inspect_file(file, format, model, examples, out, show_mask, template, Masking(train_on_inputs, mask_history))


@data_app.command("validate")
def data_validate(
    file: str,
    format: str = typer.Option(
        "auto",
        "--format",
        help="auto | text | alpaca | chat | prompt-completion | prompt-only | preference | unpaired | input-output (auto: told from the fields).",
    ),
    strict: bool = typer.Option(False, "--strict", help="Fields the layout does not use are an error."),
):
    """Check every row (the first bad one is reported with its row number); say which layout was read, why, and
    which fields it does not use."""
    from trainforge.data.formats import normalize_rows
    from trainforge.data.readers import read_rows
    from trainforge.data.report import DataReport

    report = DataReport(source=file)
    rows = normalize_rows(read_rows(file), format, file, report=report, strict=strict)
    for line in report.lines():
        out.print(line, highlight=False)
    out.print(f"[green]ok:[/] {len(rows)} valid {report.layout} rows in {file}")


@data_app.command("audit")
def data_audit(
    source: str = typer.Argument(
        ..., help="A data file or table (.csv / .tsv / .parquet), or a run config (its splits, leakage too)."
    ),
    threshold: float = typer.Option(
        0.8, min=0.0, max=1.0, help="Near duplicates: estimated Jaccard similarity of 3-word shingles, at least."
    ),
    out_file: Optional[Path] = typer.Option(
        None, "--out", help="Where audit.json goes (default: beside SOURCE); audit.html goes beside it."
    ),
    model: Optional[str] = typer.Option(
        None, help="Tokenizer that counts tokens (default: a config's model; for a file smollm2-135m-instruct)."
    ),
    tokens: bool = typer.Option(True, "--tokens/--no-tokens", help="Count tokens (--no-tokens: lengths in words)."),
    min_tokens: int = typer.Option(1, min=0, help="Rows with fewer tokens are too short (1: empty rows)."),
    max_tokens: Optional[int] = typer.Option(
        None, min=1, help="Rows with more tokens are too long (default: a config's max_length; for a file 2048)."
    ),
    target: Optional[str] = typer.Option(
        None, help="A table file's label column (default: the one named target, label, class or y)."
    ),
    label_issues: bool = typer.Option(
        False,
        "--label-issues",
        help="A classification or text-classification config: rank the rows whose label is likely wrong.",
    ),
):
    """Exact and near duplicates, validation / test rows also in train, lengths in words and tokens (too short,
    too long), answer lengths, turns, system prompts, labels; for a table duplicate rows, conflicting labels, missing
    values and class balance; with --label-issues, likely wrong labels (cleanlab's confident learning). Writes
    audit.json and audit.html (the tables and plots)."""
    from trainforge.data.audit import AuditSettings, audit_source
    from trainforge.tracking.audit_html import write_audit_html
    from trainforge.tracking.rundir import atomic_write_json

    settings = AuditSettings(
        threshold=threshold,
        count_tokens=tokens,
        model=model,
        min_tokens=min_tokens,
        max_tokens=max_tokens,
        target=target,
    )
    report = audit_source(source, settings, label_issues)
    print_audit_tables(report)
    json_file = out_file or Path(f"{Path(source).with_suffix('')}.audit.json")
    atomic_write_json(json_file, report)
    html_file = json_file.with_suffix(".html")
    write_audit_html(report, html_file)
    out.print(f"audit written to [bold]{json_file}[/] and [bold]{html_file}[/]")


def print_audit_tables(report: dict) -> None:
    """The audit's tables (the same as in audit.html), then its notes: what was chosen, and what was left out."""
    from trainforge.tracking.audit_html import audit_tables

    for title, header, rows in audit_tables(report):
        table = Table(*header, title=title)
        for row in rows:
            table.add_row(*row)
        out.print(table)
    for note in report.get("notes", []):
        out.print(f"note: {note}", highlight=False)


@data_app.command("clean")
def data_clean(
    source: str = typer.Argument(..., help="A data file (any layout trainforge reads)."),
    out_file: Path = typer.Option(..., "--out", help="The cleaned rows, as JSON Lines."),
    near_threshold: float = typer.Option(
        0.8, min=0.0, max=1.0, help="Drop near duplicates at this estimated Jaccard similarity of 3-word shingles."
    ),
    exact_only: bool = typer.Option(False, "--exact-only", help="Drop exact duplicates only."),
    min_tokens: Optional[int] = typer.Option(None, min=1, help="Drop rows with fewer tokens."),
    max_tokens: Optional[int] = typer.Option(None, min=1, help="Drop rows with more tokens."),
    model: str = typer.Option("smollm2-135m-instruct", help="Tokenizer that counts the tokens."),
    redact_pii: bool = typer.Option(
        False, "--redact-pii", help="Replace e-mails, phone numbers, IPv4 addresses and card numbers by placeholders."
    ),
    language: Optional[str] = typer.Option(
        None, help="Drop rows read (with 90% confidence) as another language than this ISO 639-1 code, e.g. en."
    ),
):
    """Drop duplicates and rows outside a token window, optionally redact personal data; every dropped row is
    written with its reason to <out>.dropped.jsonl. Cleaning a cleaned file drops nothing."""
    from trainforge.data.clean import CleanSettings, clean_file

    settings = CleanSettings(
        near_threshold=None if exact_only else near_threshold,
        min_tokens=min_tokens,
        max_tokens=max_tokens,
        redact_pii=redact_pii,
        language=language,
    )
    result, dropped = clean_file(source, out_file, settings, model)
    table = Table("", "rows", title=f"cleaning {source}")
    table.add_row("kept", str(result.kept))
    for reason, count in result.reasons().most_common():
        table.add_row(f"dropped: {reason.replace('_', ' ')}", str(count))
    for placeholder, count in sorted(result.redacted.items()):
        table.add_row(f"redacted {placeholder}", str(count))
    out.print(table)
    out.print(f"cleaned rows: [bold]{out_file}[/]; dropped rows with their reasons: [bold]{dropped}[/]")


# config -----------------------------------------------------------------------------------------------------------
@config_app.command("import")
def config_import(
    file: Path = typer.Argument(..., help="A LLaMA-Factory or Axolotl training YAML."),
    tool: str = typer.Option(..., "--from", help="llamafactory | axolotl"),
    out_file: Optional[Path] = typer.Option(
        None, "--out", help="Where to write the trainforge config (default: <file>.trainforge.yaml beside it)."
    ),
):
    """Write the trainforge config of another tool's training YAML, and list every key that has no equivalent."""
    import json

    import yaml

    from trainforge.config import validate
    from trainforge.config.loader import read_yaml
    from trainforge.config.migrate import import_config
    from trainforge.tracking.rundir import atomic_write_text

    imported = import_config(read_yaml(file), tool)
    validate(imported.config, f"imported from {file}")  # what is written must train
    target = out_file or file.with_name(file.name.split(".")[0] + ".trainforge.yaml")
    header = [f"# Imported from {file} ({tool}) by `trainforge config import`."]
    if imported.unmapped:
        header.append("# Keys with no trainforge equivalent, not carried over:")
        header += [f"#   {key}: {json.dumps(value, default=str)}" for key, value in imported.unmapped.items()]
    header += [f"# Note: {note}" for note in imported.notes]
    atomic_write_text(target, "\n".join(header) + "\n" + yaml.safe_dump(imported.config, sort_keys=False))
    if imported.unmapped:
        table = Table(
            "key", "value", title=f"{len(imported.unmapped)} keys of {file.name} with no trainforge equivalent"
        )
        for key, value in imported.unmapped.items():
            table.add_row(key, str(value))
        out.print(table)
    for note in imported.notes:
        out.print(f"[yellow]note:[/] {note}")
    out.print(f"trainforge config written to [bold]{target}[/] (run it with `trainforge train {target}`)")


def main() -> None:
    try:
        # In this mode typer returns an Exit's code instead of raising it (Ctrl-C arrives as Exit(130))
        code = app(standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except TrainforgeError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/]: resume with `trainforge train CONFIG --resume`")
        sys.exit(130)
    except (typer.Abort, typer.Exit) as err:
        sys.exit(getattr(err, "exit_code", 1))
    except Exception as err:
        # Usage errors: newer typer vendors click, so take ClickException from typer's own class tree.
        click_exception = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
        if isinstance(err, click_exception):
            err.show()
            sys.exit(err.exit_code)
        if is_disk_full(err):  # any command's write: one paragraph, not a traceback
            where = f" at {err.filename}" if getattr(err, "filename", None) else ""
            Console(stderr=True).print(
                f"[bold red]error:[/] out of disk space{where} ({err}). Free space and run the command again; "
                "an interrupted training run continues from its last complete checkpoint with `--resume`.",
                highlight=False,
            )
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
