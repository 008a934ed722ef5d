"""trainforge's CUDA paths on a GPU machine in one command, each step timed and written as JSON into OUT.

    python3 scripts/gpu_check.py OUT [--kit .gpu-kit] [--budget-s 480] [--archive FILE]   # on the GPU machine
    .venv/bin/python scripts/gpu_check.py OUT --dry-run --no-install                     # the same logic on a CPU

Steps: `machine` (torch, CUDA, the GPUs); `install` (the kit's wheels from scripts/gpu_kit.py and trainforge itself,
`pip install --no-index --no-deps --target`, beside the machine's own torch / transformers / peft / accelerate);
`versions` (what each package needs against what is installed, and the TrainingArguments fields trainforge passes
that this transformers lacks); `model` (SmolLM2-135M's architecture with random weights, from the kit's config and
tokenizer, as the alias smollm2-135m-instruct in a scratch model cache); `tests` (pytest -m gpu tests/gpu);
`bench-sft` and `bench-dpo` (benchmarks/sft_vs_trl.py against TRL's defaults: tokens/s, peak GPU memory, MFU);
`fsdp` and `zero2` (2-process runs through `accelerate launch` with examples/accelerate/, on 2+ GPUs only).
A step that runs past what is left of --budget-s is stopped; one that needs a failed step is skipped, saying so.
OUT/summary.json and the table printed last sum up; --archive packs OUT after every step (the device tool brings
back 8 files at most, and a run stopped at its limit still has the steps done so far).

--dry-run runs every step on the CPU with a tiny random model and 1 step each, so that the script is known to work
before GPU time is spent (tests/unit/test_gpu_check_dry_run.py). Only the standard library is imported here: the
steps run in child processes, on the machine's python with the kit's packages on PYTHONPATH."""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
ISOLATED_WHEELS = ("deepspeed", "hjson")  # on PYTHONPATH for the ZeRO-2 step only: transformers imports an
# installed deepspeed at start-up, so a broken one would take every other step down with it
LOG_TAIL = 200_000  # characters of a step's output kept in OUT/<step>.log
DRY_RUN_BENCH = {"--steps": 1, "--max-length": 128, "--batch-size": 2, "--examples": 16}  # one step of two rows


@dataclass
class Step:
    name: str
    cap_s: int  # the longest it may take on a GPU (the dry run's CPU has the whole budget for each)
    action: Callable[[float], dict]  # its timeout in seconds → its result
    needs: tuple[str, ...] = ()


class Check:
    def __init__(self, a: argparse.Namespace):
        self.a, self.out = a, Path(a.out).resolve()
        self.started = time.monotonic()
        self.budget_s = a.budget_s or (3600 if a.dry_run else 480)
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.deepspeed_path: str | None = None
        self.model_source: Path | None = None
        self.gpus = 0
        self.results: dict[str, dict] = {}

    # ---- plumbing ----

    def left_s(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def run(self, name: str, cmd: list[str], timeout: float, env: dict | None = None) -> dict:
        """Runs `cmd` in its own process group (a timeout ends its children too), its output in OUT/<name>.log."""
        started = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env or self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            timed_out = True
        log = self.out / f"{name}.log"
        with log.open("a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(cmd)}\n{output[-LOG_TAIL:]}\n")
        return {
            "rc": proc.returncode,
            "timed_out": timed_out,
            "seconds": round(time.monotonic() - started, 1),
            "output": output,
        }

    def python(self, name: str, code: str, timeout: float, env: dict | None = None) -> dict:
        """A child python running `code`, whose last stdout line is JSON (read into `json`)."""
        done = self.run(name, [sys.executable, "-c", code], timeout, env)
        lines = [line for line in done["output"].splitlines() if line.startswith("{")]
        done["json"] = json.loads(lines[-1]) if done["rc"] == 0 and lines else None
        return done

    def failed(self, done: dict, what: str) -> dict:
        tail = "\n".join(done["output"].strip().splitlines()[-15:])
        why = "ran past its time" if done["timed_out"] else f"exited with {done['rc']}"
        return {"status": "failed", "reason": f"{what} {why}", "output_tail": tail}

    def write(self, name: str, result: dict) -> None:
        (self.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        if self.a.archive:
            archive = Path(self.a.archive)
            tmp = archive.with_name(archive.name + ".tmp")
            with tarfile.open(tmp, "w:gz") as tar:
                for path in sorted(self.out.iterdir()):
                    if path.is_file():
                        tar.add(path, arcname=f"{self.out.name}/{path.name}")
            tmp.replace(archive)

    # ---- steps: each returns {"status": ok | failed | skipped, ...} ----

    def machine(self, timeout: float) -> dict:
        code = """
import json, os, platform, sys, torch
gpus = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
print(json.dumps({"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
    "torch": torch.__version__, "cuda": torch.version.cuda, "gpus": [
        {"name": g.name, "memory_gib": round(g.total_memory / 2**30, 1), "capability": f"{g.major}.{g.minor}"}
        for g in gpus], "bf16": bool(gpus) and torch.cuda.is_bf16_supported()}))
"""
        done = self.python("machine", code, timeout)
        if done["json"] is None:
            return self.failed(done, "reading torch's view of the machine")
        self.gpus = len(done["json"]["gpus"])
        if not self.gpus and not self.a.dry_run:
            return {"status": "failed", "reason": "torch sees no CUDA GPU; on a CPU run --dry-run", **done["json"]}
        return {"status": "ok", **done["json"]}

    def install(self, timeout: float) -> dict:
        if self.a.no_install:
            return {"status": "skipped", "reason": "--no-install: the packages of this environment as they are"}
        wheels = sorted((Path(self.a.kit) / "wheels").glob("*.whl"))
        if not wheels:
            return {
                "status": "failed",
                "reason": f"no wheels in {self.a.kit}/wheels: build the kit with scripts/gpu_kit.py and carry it",
            }
        site = Path(self.a.site)
        shutil.rmtree(site, ignore_errors=True)
        isolated = [w for w in wheels if w.name.split("-")[0] in ISOLATED_WHEELS]
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--target"]
        started = time.monotonic()
        done = self.run("install", [*pip, str(site), *[str(w) for w in wheels if w not in isolated]], timeout)
        if done["rc"]:
            return self.failed(done, "pip install of the kit's wheels")
        if isolated:
            done = self.run(
                "install", [*pip, f"{site}-deepspeed", *map(str, isolated)], self.time_for(timeout, started)
            )
            if done["rc"]:
                return self.failed(done, "pip install of deepspeed")
            self.deepspeed_path = f"{site}-deepspeed"
        # trainforge from a copy of its sources: pip builds in the source folder, which stays as it is
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("pyproject.toml", "README.md"):
                shutil.copy2(ROOT / name, Path(tmp) / name)
            shutil.copytree(ROOT / "src", Path(tmp) / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            done = self.run("install", [*pip, str(site), "--no-build-isolation", tmp], self.time_for(timeout, started))
        if done["rc"]:
            return self.failed(done, "pip install of trainforge (--no-deps --no-build-isolation)")
        self.env["PYTHONPATH"] = os.pathsep.join([str(site), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return {
            "status": "ok",
            "site": str(site),
            "wheels": [w.name for w in wheels],
            "deepspeed_site": self.deepspeed_path,
        }

    def time_for(self, timeout: float, started: float) -> float:
        return max(1.0, timeout - (time.monotonic() - started))

    def versions(self, timeout: float) -> dict:
        done = self.python("versions", VERSIONS_CODE, timeout)
        if done["json"] is None:
            return self.failed(done, "reading the versions and TrainingArguments")
        found = done["json"]
        if found["missing_training_arguments"]:
            return {
                "status": "failed",
                "reason": f"transformers {found['versions']['transformers']}'s TrainingArguments has no "
                f"{', '.join(found['missing_training_arguments'])}, which trainforge passes "
                "(src/trainforge/methods/training_args.py); transformers has activation_checkpointing from 5.23 on",
                **found,
            }
        return {"status": "ok", **found}

    def model(self, timeout: float) -> dict:
        source = "" if self.a.dry_run else str(Path(self.a.kit).resolve() / "smollm2")
        if source and not (Path(source) / "config.json").is_file():
            return {
                "status": "failed",
                "reason": f"{source} holds no config.json: build the kit with scripts/gpu_kit.py",
            }
        code = f"""
import json, sys
from pathlib import Path
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
from sft_vs_trl import random_init_cache
from trainforge.models.registry import resolve_model
source = Path({source!r} or resolve_model("tiny-llama"))  # the dry run: the tiny test model's shapes
print(json.dumps({{"source": str(source), "cache": random_init_cache(source)}}))
"""
        done = self.python("model", code, timeout)
        if done["json"] is None:
            return self.failed(done, "building the random-weight model")
        self.model_source = Path(done["json"]["source"])
        self.env["TRAINFORGE_CACHE"] = done["json"]["cache"]
        config = json.loads((self.model_source / "config.json").read_text())
        shape = {k: config.get(k) for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")}
        return {"status": "ok", **done["json"], "shape": shape}

    def tests(self, timeout: float) -> dict:
        env = {**self.env, **({"TRAINFORGE_GPU_DRY_RUN": "1"} if self.a.dry_run else {})}
        report = self.out / "tests.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests/gpu"]
        done = self.run("tests", [*cmd, "-o", "junit_family=legacy", f"--junitxml={report}"], timeout, env)
        cases = junit_cases(report) if report.is_file() else []
        counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
        if done["rc"] or not cases:
            return {**self.failed(done, "pytest"), **counts, "cases": cases}
        return {"status": "ok", **counts, "seconds_pytest": done["seconds"], "cases": cases}

    def bench(self, job: str, timeout: float) -> dict:
        out = self.out / f"bench-{job}-rows.json"
        batch = self.a.sft_batch if job == "sft" else self.a.dpo_batch
        sizes = {"--steps": self.a.steps, "--max-length": self.a.max_length, "--batch-size": batch}
        # every step in one epoch: trainforge evaluates its validation split at an epoch's end, inside the timed
        # training, and TRL's side has none (the examples train on 80% and 85% of the rows)
        sizes["--examples"] = self.a.steps * batch * 5 // 4 + batch
        sizes = DRY_RUN_BENCH if self.a.dry_run else sizes
        cmd = [sys.executable, "benchmarks/sft_vs_trl.py", "--job", job, "--no-ablations"]
        cmd += [*(str(x) for kv in sizes.items() for x in kv), "--random-init", str(self.model_source), f"--out={out}"]
        done = self.run(f"bench-{job}", cmd, timeout)
        if done["rc"] or not out.is_file():
            return self.failed(done, f"benchmarks/sft_vs_trl.py --job {job}")
        rows = json.loads(out.read_text())
        keep = ("run", "precision", "steps", "tokens", "tokens_per_s", "speedup_vs_trl", "peak_gpu_mb")
        keep += (
            "gpu_memory_vs_trl",
            "peak_rss_mb",
            "final_loss",
            "mfu_bf16",
            "mfu_fp32",
            "mfu_ceiling_bf16",
            "mfu_ceiling_fp32",
        )
        table = [{k: r[k] for k in keep if k in r} for r in rows["rows"]]
        return {
            "status": "ok",
            "device": rows["meta"]["device"],
            "peak_flops": rows["meta"]["peak_flops"],
            "rows": table,
        }

    def distributed(self, name: str, timeout: float) -> dict:
        """2 processes through `accelerate launch` with the example config (num_processes set to 2)."""
        accelerate_config, run_config = {
            "fsdp": ("fsdp.yaml", "lora-sft.yaml"),
            "zero2": ("deepspeed-zero2.yaml", "full-sft.yaml"),  # ZeRO-2 shards optimizer state: a full fine-tune's
        }[name]
        written = self.out / f"accelerate-{accelerate_config}"
        text, found = re.subn(
            r"^num_processes: \d+$",
            "num_processes: 2",
            (ROOT / "examples" / "accelerate" / accelerate_config).read_text(),
            flags=re.M,
        )
        if found != 1:
            return {
                "status": "failed",
                "reason": f"examples/accelerate/{accelerate_config} has no `num_processes: N` line",
            }
        written.write_text(text)
        runs = self.out / f"{name}-runs"  # left out of the archive, which holds OUT's files only
        budget = ["training.max_steps=20", "training.logging_steps=1", "training.save_steps=100"]
        budget += ["evaluation.before_after=false", "evaluation.generation=false", f"tracking.runs_dir={runs}"]
        budget += ["tracking.mlflow=false", "tracking.report=false"]
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(written)]
        cmd += ["-m", "trainforge.cli", "train", f"examples/{run_config}", *budget]
        planned = {"command": " ".join(cmd), "accelerate_config": written.name}
        if self.gpus < 2:
            return {"status": "skipped", "reason": f"{self.gpus} GPU(s): a 2-process run needs 2 or more", **planned}
        env = dict(self.env)
        if name == "zero2":
            if not self.deepspeed_path:
                return {"status": "skipped", "reason": "deepspeed not installed (gpu_kit.py --no-deepspeed)", **planned}
            env["PYTHONPATH"] = os.pathsep.join([self.deepspeed_path, env.get("PYTHONPATH", "")])
        done = self.run(name, cmd, timeout, env)
        metrics = sorted(runs.glob("*/metrics.jsonl"))
        if done["rc"] or not metrics:
            return {**self.failed(done, f"accelerate launch ({accelerate_config})"), **planned}
        rows = [json.loads(line) for line in metrics[0].read_text().splitlines() if line.strip()]
        losses = [r["loss"] for r in rows if "loss" in r]
        return {"status": "ok", **planned, "losses": losses, "run": str(metrics[0].parent)}

    # ---- the whole check ----

    def steps(self) -> list[Step]:
        ready = ("versions", "model")
        return [
            Step("machine", 60, self.machine),
            Step("install", 180, self.install, ("machine",)),
            Step("versions", 120, self.versions, ("install",)),
            Step("model", 180, self.model, ("install",)),
            Step("tests", 240, self.tests, ready),
            Step("bench-sft", 240, lambda t: self.bench("sft", t), ready),
            Step("bench-dpo", 240, lambda t: self.bench("dpo", t), ready),
            Step("fsdp", 180, lambda t: self.distributed("fsdp", t), ready),
            Step("zero2", 240, lambda t: self.distributed("zero2", t), ready),
        ]

    def main(self) -> int:
        # the children's temporary files (the scratch model cache, the benchmark's runs) go with OUT, not into /tmp
        (self.out / "tmp").mkdir(parents=True, exist_ok=True)
        self.env["TMPDIR"] = str(self.out / "tmp")
        for step in self.steps():
            blocked = [n for n in step.needs if self.results.get(n, {}).get("status") == "failed"]
            left = self.left_s()
            started = time.monotonic()
            if step.name in self.a.skip:
                result = {"status": "skipped", "reason": "--skip"}
            elif blocked:
                result = {"status": "skipped", "reason": f"needs {', '.join(blocked)}, which failed"}
            elif left < 5:
                result = {"status": "skipped", "reason": f"the budget of {self.budget_s:.0f} s is spent"}
            else:
                result = step.action(left if self.a.dry_run else min(step.cap_s, left))
            result = {"step": step.name, "seconds": round(time.monotonic() - started, 1), **result}
            self.results[step.name] = result
            self.write(step.name, result)
            print(f"[{self.elapsed():6.1f}s] {step.name}: {result['status']} {result.get('reason', '')}", flush=True)
        summary = {
            "dry_run": self.a.dry_run,
            "seconds": round(self.elapsed(), 1),
            "cpu_seconds": round(
                sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), k) for k in ("ru_utime", "ru_stime"))
            ),
            "ok": all(r["status"] != "failed" for r in self.results.values()),
            "steps": {name: brief(result) for name, result in self.results.items()},
        }
        self.write("summary", summary)
        print_table(self.results)
        return 0 if summary["ok"] else 1

    def elapsed(self) -> float:
        return time.monotonic() - self.started


# Runs in a child: the versions of what the steps import, each requirement not met, and the TrainingArguments
# fields trainforge passes (for the example SFT config) that this transformers does not have.
VERSIONS_CODE = """
import dataclasses, json, types
from importlib.metadata import PackageNotFoundError, requires, version
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

NAMES = ["torch", "transformers", "peft", "accelerate", "trl", "datasets", "bitsandbytes", "pydantic", "trainforge",
         "tokenizers", "safetensors", "huggingface-hub", "pyarrow", "pandas", "numpy"]

def installed(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None

unmet = []
for name in NAMES:
    for text in (requires(name) or []) if installed(name) else []:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        if name == "trainforge" and canonicalize_name(req.name) not in NAMES:
            continue  # the LM path's packages only: the rest serve other tasks, not installed there
        have = installed(req.name)
        if have is None or not req.specifier.contains(have, prereleases=True):
            unmet.append(f"{name} {installed(name)} needs {req}, found {have or 'nothing'}")

from transformers import TrainingArguments
from trainforge.config import load_config
from trainforge.methods.training_args import trainer_arguments

config = load_config("examples/lora-sft.yaml", ["training.gradient_checkpointing=1"])  # `auto`: resolved later
passed = trainer_arguments(config, types.SimpleNamespace(checkpoints="/tmp"), has_eval=False)
fields = {f.name for f in dataclasses.fields(TrainingArguments)}
print(json.dumps({"versions": {n: installed(n) for n in NAMES}, "unmet_requirements": unmet,
                  "missing_training_arguments": sorted(set(passed) - fields)}))
"""


def junit_cases(report: Path) -> list[dict]:
    """Each test's outcome, seconds, the numbers it recorded (record_property) and its failure's first lines."""
    cases = []
    for case in ElementTree.parse(report).iter("testcase"):
        outcome, message = "passed", None
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "skipped" if child.tag == "skipped" else "failed"
                message = "\n".join((child.get("message") or child.text or "").splitlines()[:6])
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        cases.append(
            {
                "test": case.get("name"),
                "outcome": outcome,
                "seconds": float(case.get("time") or 0),
                **({"measured": properties} if properties else {}),
                **({"message": message} if message else {}),
            }
        )
    return cases


def brief(result: dict) -> dict:
    """A step's status with its headline numbers, for summary.json."""
    keep = {"status", "seconds", "reason", "passed", "failed", "skipped", "gpus", "unmet_requirements"}
    out = {k: v for k, v in result.items() if k in keep}
    if "rows" in result:
        out["rows"] = {r["run"]: {k: v for k, v in r.items() if k != "run"} for r in result["rows"]}
    return out


def print_table(results: dict[str, dict]) -> None:
    print(f"\n{'step':<10} {'status':<8} {'seconds':>8}  notes")
    for name, r in results.items():
        notes = r.get("reason", "")
        if "passed" in r:
            notes = f"{r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped " + notes
        print(f"{name:<10} {r['status']:<8} {r['seconds']:>8}  {notes}"[:200])
        for row in r.get("rows", []):
            figures = ", ".join(f"{k} {v}" for k, v in row.items() if k != "run")
            print(f"{'':<10} {row['run']}: {figures}"[:300])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder for the steps' JSON, logs and summary.json")
    p.add_argument("--dry-run", action="store_true", help="on the CPU, a tiny random model, 1 step each")
    p.add_argument("--kit", default=str(ROOT / ".gpu-kit"), help="the folder scripts/gpu_kit.py built")
    p.add_argument("--no-install", action="store_true", help="use this environment's packages as they are")
    p.add_argument("--site", default=os.path.join(tempfile.gettempdir(), "trainforge-gpu-site"))
    p.add_argument(
        "--budget-s", type=float, help="the whole check's seconds (480; 3600 in the dry run); later steps skip past it"
    )
    p.add_argument("--archive", help="a .tar.gz of OUT, rewritten after every step")
    p.add_argument("--steps", type=int, default=100, help="benchmark: optimizer steps per run")
    p.add_argument("--max-length", type=int, default=1024, help="benchmark: sequence limit")
    # ~6.4k tokens a step: larger batches need more rows tokenized per side (a step's rows x 100 steps, one epoch),
    # which the 8-minute budget does not hold for both jobs
    p.add_argument("--sft-batch", type=int, default=64, help="benchmark: SFT rows per step (~100 tokens each)")
    p.add_argument("--dpo-batch", type=int, default=32, help="benchmark: DPO pairs per step")
    p.add_argument("--skip", default="", help="steps to leave out, comma-separated (tests: rerun only the benchmarks)")
    a = p.parse_args()
    check = Check(a)
    a.skip = set(filter(None, a.skip.split(",")))
    unknown = a.skip - {step.name for step in check.steps()}
    if unknown:
        p.error(f"--skip: no step named {', '.join(sorted(unknown))}")
    return check.main()


if __name__ == "__main__":
    sys.exit(main())
