"""scripts/gpu_check.py --dry-run: the steps of the GPU check run on the CPU with a tiny random model, one step
each, and write the JSON the GPU run will write, so the script is known to work before GPU time is spent.
`bench-dpo` is left out (--skip) to keep the suite's time down: it is bench-sft's harness on the DPO job, and each
benchmark job starts four processes (~1 CPU-minute here); the full dry run in docs/gpu-check.md runs it."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["machine", "install", "versions", "model", "tests", "bench-sft", "bench-dpo", "fsdp", "zero2"]


def test_the_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    out, archive = tmp_path / "out", tmp_path / "gpu-check.tgz"
    done = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", str(out), "--dry-run", "--no-install", "--skip=bench-dpo"]
        + [f"--archive={archive}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and summary["ok"] and list(summary["steps"]) == STEPS
    steps = {name: json.loads((out / f"{name}.json").read_text()) for name in STEPS}
    assert {name: s["status"] for name, s in steps.items()} == {
        **dict.fromkeys(STEPS, "ok"),
        "install": "skipped",  # --no-install
        "bench-dpo": "skipped",  # --skip
        "fsdp": "skipped",  # no GPU here: the 2-process runs need 2
        "zero2": "skipped",
    }
    assert steps["machine"]["gpus"] == [] and steps["versions"]["missing_training_arguments"] == []
    # the scratch model cache holds the alias the benchmark and the tests load, with the tiny model's shapes
    assert steps["model"]["shape"]["num_hidden_layers"] == 2
    # every GPU test ran on the CPU, bar the GPU-only LoftQ (and the bf16 comparisons on a CPU without bf16 units),
    # and the comparisons recorded their numbers
    cases = {c["test"]: c for c in steps["tests"]["cases"]}
    skipped = {name for name, c in cases.items() if c["outcome"] == "skipped"}
    assert steps["tests"]["failed"] == 0 and len(cases) == 13 and "test_qlora_with_loftq_init_on_the_gpu" in skipped
    assert all("loftq" in name or "bf16" in name for name in skipped)
    measured = cases["test_shared_prompt_log_probs_equal_trls_forward[fp32-sdpa]"]["measured"]
    assert float(measured["max_abs_error"]) < 1e-4 < float(measured["broken_mask_mean_abs_error"])
    # the benchmark trained one step on each side, TRL's defaults the baseline, and measured its MFU ceiling
    rows = {r["run"]: r for r in steps["bench-sft"]["rows"]}
    assert set(rows) == {"TRL + peft defaults", "trainforge"}
    assert all(r["steps"] == 1 and r["tokens"] > 0 and r["tokens_per_s"] > 0 for r in rows.values())
    assert rows["TRL + peft defaults"]["speedup_vs_trl"] == 1.0
    assert [v for k, v in rows["trainforge"].items() if k.startswith("mfu_ceiling_")][0] > 0  # bf16 or fp32
    # the distributed steps wrote the launch they would run
    fsdp = steps["fsdp"]
    assert "accelerate.commands.launch" in fsdp["command"] and "examples/lora-sft.yaml" in fsdp["command"]
    assert "num_processes: 2" in (out / fsdp["accelerate_config"]).read_text()
    # the archive (what the device tool brings back) holds every step's JSON
    with tarfile.open(archive) as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {f"{name}.json" for name in [*STEPS, "summary"]} <= names
