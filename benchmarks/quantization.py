"""Quantized exports, measured: the same model as fp32 / bf16 / int8 (torchao weight-only) / int4 (bitsandbytes
NF4) / ONNX int8 (onnxruntime dynamic quantization), each written by `trainforge export`'s code and loaded back from
disk. Prints size on disk, inference speed
(forward tokens/s, or rows/s for a classifier) and quality on the same held-out rows: perplexity on the answers of
held-out dates-json rows for a causal LM (SmolLM2-135M-Instruct by default), accuracy for a text-classification run.

    PYTHONPATH=src python benchmarks/quantization.py [--model smollm2-135m-instruct] [--rows 48]
    PYTHONPATH=src python benchmarks/quantization.py --run runs/textcls-full      # a MiniLM classifier run

Both write their section of benchmarks/quantization.json and .txt (the other kind's numbers stay).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

KINDS = ("fp32", "bf16", "int8", "int4", "onnx-int8")


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir() if f.suffix in (".safetensors", ".onnx")) / 2**20


class OnnxLogits:
    """An exported ONNX model behind the slice of the transformers model interface that the measurements call."""

    def __init__(self, folder: Path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])

    def eval(self):
        return self

    def parameters(self):
        yield torch.zeros(())  # only read for its device: CPU

    def __call__(self, input_ids, attention_mask, **_):
        from types import SimpleNamespace

        logits = self.session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})[0]
        return SimpleNamespace(logits=torch.from_numpy(logits))


def _export(src: Path, auto, kind: str, out: Path) -> Path:
    """The `kind` folder written from the fp32 folder `src` by the export code."""
    from trainforge.export.quantize import quantize_folder

    if kind == "fp32":
        return src
    if kind == "onnx-int8":
        from transformers import AutoTokenizer

        from trainforge.export.onnx import export_onnx

        return export_onnx(
            auto.from_pretrained(src, dtype=torch.float32), AutoTokenizer.from_pretrained(src), out, "int8"
        )
    return quantize_folder(src, auto, kind, out)


def _load(folder: Path, auto, kind: str):
    return OnnxLogits(folder) if kind.startswith("onnx") else auto.from_pretrained(folder, device_map="cpu").eval()


def _lm_rows(tokenizer, n: int, seed: int = 7):
    from trainforge.config import load_config
    from trainforge.data.splits import load_splits
    from trainforge.data.tokenize import tokenize_examples

    cfg = load_config(
        base={
            "data": {
                "task": "dates-json",
                "task_size": n * 4,
                "split": {"train": 0.5, "validation": 0.25, "test": 0.25},
            }
        }
    )
    splits = load_splits(cfg.data, seed)
    return tokenize_examples(tokenizer, splits.test[:n], "sft", 256)


def _measure_lm(model, rows, pad_id: int) -> dict:
    from trainforge.evaluation.lm import perplexity

    perplexity(model, rows[:2], pad_id, 8)  # warm-up
    started = time.perf_counter()
    ppl = perplexity(model, rows, pad_id, 8)
    seconds = time.perf_counter() - started
    return {"speed": sum(len(r["input_ids"]) for r in rows) / seconds, "quality": ppl}


def _measure_classifier(model, rows, tokenizer) -> dict:
    import numpy as np

    from trainforge.tasks.text_classification.task import predict_logits

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

    from trainforge.export.quantize import run_model
    from trainforge.models import load_tokenizer, resolve_model
    from trainforge.tracking import find_run

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="tf-quant-bench-"))
    try:
        if args.run:
            from trainforge.data.labelled import encode
            from trainforge.tasks import registry
            from trainforge.tasks.text_classification.task import held_out_rows

            run = find_run(args.run)
            model, tokenizer, auto = run_model(run)
            src = work / "fp32"
            model.save_pretrained(src)
            tokenizer.save_pretrained(src)
            del model
            if registry.for_run(run).name != "text-classification":
                raise SystemExit("--run: this benchmark reads text-classification runs; use --model for an LM folder")
            raw, _ = held_out_rows(run, None, json.loads(run.file("labels.json").read_text())["classes"])
            classes = json.loads(run.file("labels.json").read_text())["classes"]
            rows = encode(tokenizer, raw, classes, False, 128)
            measure, speed_unit, quality_name = (
                (lambda m: _measure_classifier(m, rows, tokenizer)),
                "rows/s",
                "accuracy",
            )
            subject = f"{run.name} ({len(rows)} test rows)"
        else:
            src, auto = resolve_model(args.model), AutoModelForCausalLM
            tokenizer = load_tokenizer(args.model)
            rows = _lm_rows(tokenizer, args.rows)
            measure = lambda m: _measure_lm(m, rows, tokenizer.pad_token_id)  # noqa: E731
            speed_unit, quality_name = "tokens/s", "perplexity"
            subject = f"{args.model} ({len(rows)} held-out dates-json rows, perplexity on the answers)"
        results = {}
        for kind in KINDS:
            folder = _export(src, auto, kind, work / kind)
            results[kind] = {"size_mb": _size_mb(folder), **measure(_load(folder, auto, kind))}
            print(f"{kind}: {results[kind]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results["fp32"]
    lines = [
        f"{subject}; {torch.get_num_threads()} threads",
        f"| precision | size on disk (MB) | vs fp32 | {speed_unit} | {quality_name} | Δ vs fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for kind, r in results.items():
        lines.append(
            f"| {kind} | {r['size_mb']:.1f} | {r['size_mb'] / base['size_mb']:.0%} | {r['speed']:.0f} | "
            f"{r['quality']:.4g} | {r['quality'] - base['quality']:+.4g} |"
        )
    print("\n".join(lines))
    # one section per kind of model (lm, text-classification): measuring one keeps the other's numbers
    out = Path(args.out)
    sections = json.loads(out.read_text()) if out.is_file() else {}
    sections["text-classification" if args.run else "lm"] = {"subject": subject, "results": results, "table": lines}
    out.write_text(json.dumps(sections, indent=2))
    out.with_suffix(".txt").write_text("\n\n".join("\n".join(s["table"]) for s in sections.values()) + "\n")


if __name__ == "__main__":
    main()
