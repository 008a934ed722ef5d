"""Build `.gpu-kit/`: what `scripts/gpu_check.py` needs on a bare CUDA machine that cannot reach a package index.

Such a machine has torch, transformers, peft, accelerate and the usual scientific stack, but not trl, datasets,
bitsandbytes, pydantic or deepspeed. The kit holds their wheels (pinned to the versions installed here, where the
tests pass; deepspeed, published as source only, is built here into a pure-Python wheel whose CUDA ops compile at
run time), and SmolLM2-135M-Instruct's config and tokenizer files without its weights. The kit is ignored by git;
the device tool carries it beside the working tree, whose files and the kit must stay under 64 MiB together.

    .venv/bin/python scripts/gpu_kit.py                         # for the lent machines (CPython 3.12, x86-64)
    .venv/bin/python scripts/gpu_kit.py --python-version 3.11 --out /tmp/kit311   # to rehearse on this machine
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Wheels for the lent machines' CPython on x86-64 Linux; pip matches each manylinux tag exactly.
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
# What the machine lacks for LM training, the gpu tests and the benchmark, at this environment's versions.
PINNED_HERE = [
    "trl",
    "datasets",
    "dill",
    "multiprocess",
    "bitsandbytes",  # about 41 MiB: one library per CUDA release; leave it out with --no-bitsandbytes
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
]
DEEPSPEED = ["deepspeed==0.19.8", "hjson==3.1.0"]  # ZeRO-2 on 2+ GPUs; not installed here, so pinned by hand
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
BUDGET_MIB = 64  # the device tool's limit on the working tree and carried paths together


def download(names: list[str], wheels: Path, python_version: str) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        + ["--python-version", python_version, "--implementation", "cp", *platforms, "-d", str(wheels), *names],
        check=True,
    )


def build_deepspeed(wheels: Path) -> None:
    """deepspeed's setup imports torch (found here), so it is built without isolation; with no op prebuilt
    (DS_BUILD_OPS unset) the wheel is pure Python."""
    download(DEEPSPEED[1:], wheels, "3")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels)]
        + DEEPSPEED[:1],
        check=True,
    )


def travelling_bytes() -> int:
    """The working tree as the device tool sends it: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum((ROOT / name.decode()).stat().st_size for name in listed if name and (ROOT / name.decode()).is_file())


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / ".gpu-kit")
    p.add_argument("--python-version", default="3.12", help="the target machine's CPython (3.12 on the lent ones)")
    p.add_argument("--no-bitsandbytes", action="store_true", help="leave QLoRA's 41 MiB wheel out (its steps skip)")
    p.add_argument("--no-deepspeed", action="store_true", help="leave deepspeed out (the ZeRO-2 step skips)")
    a = p.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from trainforge.models.registry import resolve_model

    names = [n for n in PINNED_HERE if not (a.no_bitsandbytes and n == "bitsandbytes")]
    pins = [f"{n}=={version(n)}" for n in names]
    with tempfile.TemporaryDirectory() as tmp:  # a failed build leaves the previous kit as it was
        kit = Path(tmp) / "kit"
        wheels, model = kit / "wheels", kit / "smollm2"
        download(pins, wheels, a.python_version)
        if not a.no_deepspeed:
            build_deepspeed(wheels)
        model.mkdir()
        source = resolve_model("smollm2-135m-instruct")
        for name in MODEL_FILES:
            shutil.copy2(source / name, model / name)
        manifest = {
            "built": time.strftime("%Y-%m-%d %H:%M"),
            "python_version": a.python_version,
            "wheels": sorted(w.name for w in wheels.glob("*.whl")),
            "model": "SmolLM2-135M-Instruct: config and tokenizer only (gpu_check builds it with random weights)",
        }
        (kit / "kit.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(a.out, ignore_errors=True)
        shutil.move(str(kit), a.out)
    sizes = {w.name: w.stat().st_size for w in sorted((a.out / "wheels").glob("*.whl"))}
    sizes["smollm2/ (config, tokenizer)"] = folder_bytes(a.out / "smollm2")
    tree, kit_total = travelling_bytes(), folder_bytes(a.out)
    for name, size in sorted(sizes.items(), key=lambda item: -item[1]):
        print(f"{size / 2**20:8.2f} MiB  {name}")
    print(f"{kit_total / 2**20:8.2f} MiB  kit {a.out}")
    print(f"{tree / 2**20:8.2f} MiB  working tree (tracked + untracked, not ignored)")
    total = (tree + kit_total) / 2**20
    print(f"{total:8.2f} MiB  together, of the device tool's {BUDGET_MIB} MiB")
    if total > BUDGET_MIB:
        raise SystemExit(
            f"The kit and the working tree come to {total:.1f} MiB, over the device tool's {BUDGET_MIB} MiB: "
            "build it with --no-bitsandbytes (QLoRA's steps then skip) or --no-deepspeed."
        )


if __name__ == "__main__":
    main()
