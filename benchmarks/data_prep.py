"""Data preparation at scale: trainforge's (checked examples and tokens on memory-mapped Arrow, cached) against TRL
`SFTTrainer`'s own preparation of the same rows, side by side in one invocation.

The rows are generated alpaca rows (instruction / input / output, seeded, of varied lengths) in a JSON Lines file.
Each side prepares them for SFT with SmolLM2-135M-Instruct's tokenizer and chat template at max_length 512, each
measurement in a process of its own: trainforge's `lm` task preparation (read, check, split 90/10, tokenize,
loss masks, report), first on an empty cache, then again on the cache; TRL as its users write it,
`load_dataset("json")`, the alpaca fields mapped to its conversational prompt-completion layout, then
`SFTTrainer(...)` with its defaults (its datasets cache empty, then warm). Reported per side: seconds, rows/s
and the peak resident memory of the process (and of its worker processes) above what it held before preparing.

    PYTHONPATH=src python benchmarks/data_prep.py [--sizes 20000,100000,1000000] [--out benchmarks/data_prep.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "smollm2-135m-instruct"
MAX_LENGTH = 512
WORDS = (
    "model data train token layer loss answer question river mountain city number list write explain summarize "
    "translate compute history science music language table column value function result reason example short "
    "long simple clear first second third every each other"
).split()


def alpaca_rows(n: int, seed: int = 0):
    """Seeded alpaca rows: a 4–30 word instruction, an input on a third of them, a 10–200 word answer."""
    rng = random.Random(seed)

    def words(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."

    for _ in range(n):
        yield {
            "instruction": words(4, 30),
            "input": words(5, 40) if rng.random() < 1 / 3 else "",
            "output": words(10, 200),
        }


def write_rows(path: Path, n: int) -> None:
    with path.open("w") as out:
        for row in alpaca_rows(n):
            out.write(json.dumps(row) + "\n")


def peak_mb() -> tuple[float, float]:
    """(this process's, its largest finished child's) peak resident memory in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def current_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child_trainforge(data: Path, runs: Path) -> dict:
    from trainforge.config import load_config
    from trainforge.models import load_tokenizer
    from trainforge.tasks.lm.task import prepare

    config = load_config(
        base={
            "name": "prep",
            "task": "lm",
            "model": {"name": MODEL},
            "method": {"name": "lora"},
            "data": {"path": str(data), "split": {"train": 0.9, "validation": 0.1, "test": 0.0}},
            "training": {"objective": "sft", "max_length": MAX_LENGTH},
            "tracking": {"runs_dir": str(runs), "mlflow": False},
        }
    )
    load_tokenizer(MODEL)  # loaded once before timing, as TRL's side gets its tokenizer ready-made
    before = current_mb()
    started = time.perf_counter()
    prep = prepare(config)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "before_mb": before, "train_rows": len(prep.train_rows)}


def child_trl(data: Path, cache: Path) -> dict:
    os.environ["HF_DATASETS_CACHE"] = str(cache)
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from trainforge.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(MODEL)
    model = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-llama"))  # preparation does not run it
    before = current_mb()
    started = time.perf_counter()

    def conversational(row: dict) -> dict:
        prompt = row["instruction"] + ("\n\n" + row["input"] if row["input"] else "")
        return {
            "prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": row["output"]}],
        }

    rows = load_dataset("json", data_files=str(data), split="train")
    rows = rows.map(conversational, remove_columns=rows.column_names).train_test_split(test_size=0.1, seed=0)
    args = SFTConfig(output_dir=str(cache / "out"), max_length=MAX_LENGTH, report_to=[], use_cpu=True)
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=rows["train"], eval_dataset=rows["test"], processing_class=tokenizer
    )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "before_mb": before, "train_rows": len(trainer.train_dataset)}


def measure(side: str, data: Path, place: Path) -> dict:
    """One preparation in a fresh process: its seconds and the peak memory above what it held before."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", side, "--data", str(data), "--place", str(place)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )
    if out.returncode:
        raise SystemExit(f"{side} on {data} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,100000,1000000")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    parser.add_argument("--child", choices=("trainforge", "trl"))
    parser.add_argument("--data")
    parser.add_argument("--place")
    args = parser.parse_args()
    if args.child:
        run = child_trainforge if args.child == "trainforge" else child_trl
        result = run(Path(args.data), Path(args.place))
        own, children = peak_mb()
        result.update(peak_mb=own, children_peak_mb=children, added_mb=max(own, children) - result["before_mb"])
        print(json.dumps(result))
        return

    work = Path(tempfile.mkdtemp(prefix="tf-data-prep-"))
    results = []
    try:
        for n in map(int, args.sizes.split(",")):
            data = work / f"alpaca-{n}.jsonl"
            write_rows(data, n)
            row = {"rows": n, "file_mb": round(data.stat().st_size / 2**20, 1)}
            for side in ("trainforge", "trl"):
                place = work / f"{side}-{n}"
                for run in ("first", "cached"):
                    measured = measure(side, data, place)
                    row[f"{side}_{run}"] = measured
                    print(
                        f"{n:>9} rows  {side:<10} {run:<6} {measured['seconds']:8.1f} s  "
                        f"+{measured['added_mb']:6.0f} MB",
                        flush=True,
                    )
                shutil.rmtree(place, ignore_errors=True)
            data.unlink()
            results.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    meta = {"cores": len(os.sched_getaffinity(0)), "cpu": _cpu(), "date": time.strftime("%Y-%m-%d %H:%M")}
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(
        f"\n{'rows':>9} | {'side':<10} | {'first s':>8} | {'rows/s':>7} | {'+MB':>5} | {'cached s':>8} | "
        f"{'+MB':>5} | first vs TRL | cached vs TRL first"
    )
    for row in results:
        trl = row["trl_first"]["seconds"]
        for side in ("trainforge", "trl"):
            first, cached = row[f"{side}_first"], row[f"{side}_cached"]
            print(
                f"{row['rows']:>9} | {side:<10} | {first['seconds']:8.1f} | {row['rows'] / first['seconds']:7.0f} | "
                f"{first['added_mb']:5.0f} | {cached['seconds']:8.2f} | {cached['added_mb']:5.0f} | "
                f"{trl / first['seconds']:11.2f}× | {trl / cached['seconds']:8.1f}×"
            )
    print(f"written: {args.out}")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
