"""Quantized exports, measured: the same model as fp32 / bf16 / int8 (torchao weight-only) / int4 (bitsandbytes
NF4), each written by `trainforge export`'s code and loaded back from disk. Prints size on disk, inference speed
(forward tokens/s, or rows/s for a classifier) and quality on the same held-out rows: perplexity on the answers of
held-out dates-json rows for a causal LM (SmolLM2-135M-Instruct by default), accuracy for a text-classification run.

    PYTHONPATH=src python benchmarks/quantization.py [--model smollm2-135m-instruct] [--rows 48]
    PYTHONPATH=src python benchmarks/quantization.py --run runs/textcls-full      # a MiniLM classifier run
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

KINDS = ("fp32", "bf16", "int8", "int4")


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20


def _lm_rows(tokenizer, n: int, seed: int = 7):
    from trainforge.config import load_config
    from trainforge.data.splits import load_splits
    from trainforge.data.tokenize import tokenize_examples

    cfg = load_config(base={"data": {"task": "dates-json", "task_size": n * 4, "split": {"train": 0.5, "validation": 0.25,
                                                                                       "test": 0.25}}})
    splits = load_splits(cfg.data, seed)
    return tokenize_examples(tokenizer, splits.test[:n], "sft", 256)


def _measure_lm(folder: Path, rows, pad_id: int) -> dict:
    from transformers import AutoModelForCausalLM

    from trainforge.evaluation.lm import perplexity

    model = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu").eval()
    perplexity(model, rows[:2], pad_id, 8)  # warm-up
    started = time.perf_counter()
    ppl = perplexity(model, rows, pad_id, 8)
    seconds = time.perf_counter() - started
    return {"speed": sum(len(r["input_ids"]) for r in rows) / seconds, "quality": ppl}


def _measure_classifier(folder: Path, rows, tokenizer) -> dict:
    import numpy as np
    from transformers import AutoModelForSequenceClassification

    from trainforge.textclass.run import predict_logits

    model = AutoModelForSequenceClassification.from_pretrained(folder, device_map="cpu").eval()
    predict_logits(model, tokenizer, rows[:2])
    started = time.perf_counter()
    logits = predict_logits(model, tokenizer, rows)
    seconds = time.perf_counter() - started
    accuracy = float((logits.argmax(-1) == np.asarray([r["labels"] for r in rows])).mean())
    return {"speed": len(rows) / seconds, "quality": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a causal-LM alias or folder")
    parser.add_argument("--run", default=None, help="a finished text-classification (or LM) run instead of --model")
    parser.add_argument("--rows", type=int, default=48, help="held-out rows (LM)")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    from trainforge.export.quantize import quantize_folder, run_model
    from trainforge.models import load_tokenizer, resolve_model
    from trainforge.tracking import find_run

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="tf-quant-bench-"))
    try:
        if args.run:
            from trainforge.textclass.run import _rows_for, is_text_classification
            from trainforge.textclass.data import encode

            run = find_run(args.run)
            model, tokenizer, auto = run_model(run)
            src = work / "fp32"
            model.save_pretrained(src)
            tokenizer.save_pretrained(src)
            del model
            if not is_text_classification(run):
                raise SystemExit("--run: this benchmark reads text-classification runs; use --model for an LM folder")
            raw, _ = _rows_for(run, None, json.loads(run.file("labels.json").read_text())["classes"])
            classes = json.loads(run.file("labels.json").read_text())["classes"]
            rows = encode(tokenizer, raw, classes, False, 128)
            measure, speed_unit, quality_name = (lambda f: _measure_classifier(f, rows, tokenizer)), "rows/s", "accuracy"
            subject = f"{run.name} ({len(rows)} test rows)"
        else:
            src, auto = resolve_model(args.model), AutoModelForCausalLM
            tokenizer = load_tokenizer(args.model)
            rows = _lm_rows(tokenizer, args.rows)
            measure = lambda f: _measure_lm(f, rows, tokenizer.pad_token_id)  # noqa: E731
            speed_unit, quality_name = "tokens/s", "perplexity"
            subject = f"{args.model} ({len(rows)} held-out dates-json rows, perplexity on the answers)"
        results = {}
        for kind in KINDS:
            folder = src if kind == "fp32" else quantize_folder(src, auto, kind, work / kind)
            results[kind] = {"size_mb": _size_mb(folder), **measure(folder)}
            print(f"{kind}: {results[kind]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results["fp32"]
    lines = [f"{subject}; {torch.get_num_threads()} threads",
             f"| precision | size on disk (MB) | vs fp32 | {speed_unit} | {quality_name} | Δ vs fp32 |",
             "|---|---|---|---|---|---|"]
    for kind, r in results.items():
        lines.append(f"| {kind} | {r['size_mb']:.1f} | {r['size_mb'] / base['size_mb']:.0%} | {r['speed']:.0f} | "
                     f"{r['quality']:.4g} | {r['quality'] - base['quality']:+.4g} |")
    print("\n".join(lines))
    Path(args.out).write_text(json.dumps({"subject": subject, "results": results}, indent=2))
    Path(args.out).with_suffix(".txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
