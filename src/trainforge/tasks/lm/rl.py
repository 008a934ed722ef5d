"""Task rl (task lm, objectives ppo, grpo, rloo): the data's prompts, the `reward:` scorer, the model prepared by
its method; PPO from ppo.py, GRPO / RLOO from TRL. Judged by the mean reward of greedy answers to held-out prompts
before and after; the report plots reward and KL to the reference per step. Its finished runs are language-model
runs: evaluated, served, predicted with and chained as task.py's."""

from __future__ import annotations

import json
import time

from rich.console import Console

from trainforge.config import RunConfig
from trainforge.data.versioning import of_splits
from trainforge.errors import DataError
from trainforge.run.finish import finish_with_scores, print_summary
from trainforge.run.prepare import checked_layout, resolve_run
from trainforge.run.training import baseline_scores, report_parameters, resume_checkpoint
from trainforge.tasks.lm.rewards import Reward, load_rewards, row_columns, score_all, trl_reward_funcs
from trainforge.tasks.lm.task import backend, evaluate, export_model, output_model, predict  # noqa: F401 - LM runs
from trainforge.tasks.registry import open_task_run
from trainforge.tracking.faults import resource_errors
from trainforge.tracking.rundir import RunDir, atomic_dir

console = Console(stderr=True)

VALUE_HEAD_FILE = "value_head.safetensors"  # PPO's value head, beside the policy's adapter/ or model/
SUMMARY_KEYS = (
    "method",
    "model",
    "objective",
    "steps",
    "train_seconds",
    "trainable_params",
    "first_reward",
    "last_reward",
    "last_kl",
    "precision",
)


def prompts_of(rows: list[dict], tokenizer, source: str = "data") -> list[list[dict]]:
    """What the policy answers: a prompt-only row's prompt, else the conversation up to its last message. A row's
    `tools` are listed in the built-in system block (data/tools.py), in the messages themselves: TRL renders every
    prompt of a run with one `tools` list, so a template that renders tools itself cannot show each row its own."""
    from trainforge.data.tokenize import with_tools
    from trainforge.data.tools import native_tools

    if rows and "segments" in rows[0]:
        raise DataError(
            "Raw-text prompt-completion rows (plain strings) have no conversation for the policy to "
            "answer; give `prompt` as messages, or use chat / prompt-only rows."
        )
    prompts = []
    for row in rows:
        messages = row["prompt"] if "prompt" in row else row["messages"][:-1]
        if row.get("tools"):
            if native_tools(tokenizer):
                raise DataError(
                    f"Data {source}, row {row.get('row')}: the row declares tools, and the model's chat template "
                    "renders tools itself, which RL objectives cannot do per row (TRL renders all prompts with one "
                    "tools list). Train RL on tool rows with a model whose template has no tool support (trainforge "
                    "lists the tools in a system block), or drop `tools` from the rows."
                )
            messages = with_tools(tokenizer, messages, row["tools"])[0]
        prompts.append(messages)
    return prompts


def reward_eval(
    model, tokenizer, rewards: list[Reward], prompts: list[list[dict]], columns: list[dict], config, precision: str
) -> tuple[dict, list[dict]]:
    """Mean (weighted) reward of greedy answers to held-out prompts, with each named reward's mean beside it when
    there are several (`mean_exact_answer` is the held-out exact accuracy), and the samples."""
    from trainforge.data.tokenize import render
    from trainforge.evaluation.lm import generate

    if not prompts:
        return {}, []
    texts = [render(tokenizer, p, add_generation_prompt=True) for p in prompts]
    answers = generate(model, tokenizer, texts, config.rl.max_new_tokens, config.evaluation.batch_size, precision)
    scores, each = score_all(rewards, prompts, answers, columns)
    samples = [
        {"prompt": t, "prediction": a, "reward": s, **({n: each[n][i] for n in each} if len(rewards) > 1 else {})}
        for i, (t, a, s) in enumerate(zip(texts, answers, scores))
    ]
    means = {f"mean_{n}": sum(v) / len(v) for n, v in each.items()} if config.reward.functions else {}
    return {"mean_reward": sum(scores) / len(scores), **means}, samples


def reward_kl_png(metrics: list[dict], names: list[str] = ()) -> bytes | None:
    """The rollouts' mean reward per step (and each named reward's beside it) and the KL to the reference."""
    from trainforge.tracking.figures import png, pyplot

    reward = [(m["step"], m["reward"]) for m in metrics if "reward" in m]
    kl = [(m["step"], m["kl"]) for m in metrics if "kl" in m]
    if not reward:
        return None
    fig, (ax1, ax2) = pyplot().subplots(1, 2, figsize=(9, 3.4), dpi=110)
    ax1.plot(*zip(*reward), color="tab:green", label="weighted sum")
    for name in names:
        each = [(m["step"], m[f"rewards/{name}/mean"]) for m in metrics if f"rewards/{name}/mean" in m]
        if each:
            ax1.plot(*zip(*each), alpha=0.7, label=name)
    if names:
        ax1.legend(fontsize=7)
    ax1.set(xlabel="step", ylabel="mean reward of the rollouts", title="reward")
    if kl:
        ax2.plot(*zip(*kl), color="tab:red")
    ax2.set(xlabel="step", ylabel="KL to reference (nats / completion)", title="KL")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return png(fig)


def build_trl_trainer(
    model,
    tokenizer,
    rewards: list[Reward],
    prompts: list[list[dict]],
    columns: list[dict],
    config,
    run: RunDir,
    callbacks,
):
    """TRL's GRPOTrainer or RLOOTrainer with each reward as its own reward function and weight (so TRL logs each
    per step); `training.batch_size` prompts per step, each answered `rl.num_generations` times. Each prompt's row
    columns travel as a JSON `columns` column, which TRL hands the reward functions."""
    from datasets import Dataset

    from trainforge.methods.training_args import trainer_arguments

    if config.training.objective == "grpo":
        from trl import GRPOConfig as Args
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Args
        from trl import RLOOTrainer as Trainer
    rl = config.rl
    kwargs = trainer_arguments(config, run, has_eval=False)
    kwargs.update(
        per_device_train_batch_size=config.training.batch_size * rl.num_generations, include_num_input_tokens_seen="no"
    )
    funcs, weights = trl_reward_funcs(rewards)
    args = Args(
        **kwargs,
        reward_weights=weights,
        num_generations=rl.num_generations,
        max_completion_length=rl.max_new_tokens,
        temperature=rl.temperature,
        beta=rl.kl_coef,
        epsilon=rl.clip_range,
        disable_dropout=True,
    )
    return Trainer(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": p, "columns": json.dumps(c)} for p, c in zip(prompts, columns)]),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def train(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunDir:
    from safetensors.torch import save_file
    from transformers import set_seed

    from trainforge.data.splits import load_splits
    from trainforge.models import load_causal_lm, load_tokenizer
    from trainforge.tracking.callbacks import FiniteLossGuard, MetricsLogger, ShareCheckpoints

    config, hardware, method = resolve_run(config)
    t = config.training
    rewards = load_rewards(config)  # a bad reward, or data that lacks its columns, fails before the run directory
    needs = {column for reward in rewards for column in reward.needs}
    splits = checked_layout(config, load_splits(config.data, t.seed, carry=needs))
    tokenizer = load_tokenizer(config.model.name)
    train_prompts = prompts_of(splits.train, tokenizer, splits.source)
    train_columns = row_columns(splits.train, rewards, splits.source)
    held = splits.test or splits.validation
    held = held[: config.evaluation.max_samples] if config.evaluation.max_samples else held
    heldout, heldout_columns = prompts_of(held, tokenizer, splits.source), row_columns(held, rewards, splits.source)
    console.print(f"[bold]hardware:[/] {hardware.describe()}")
    console.print(f"[bold]data:[/] {splits.source} → {len(train_prompts)} training prompts, {len(heldout)} held out")
    config, run = open_task_run("rl", config, resume, of_splits(splits))
    with run.failing_on_error(), resource_errors(run, t):
        set_seed(t.seed)
        model = load_causal_lm(config.model.name, quantization_config=method.quantization_config())
        precision = hardware.precision
        before = baseline_scores(
            run, config, lambda: reward_eval(model, tokenizer, rewards, heldout, heldout_columns, config, precision)
        )
        set_seed(t.seed)
        model = method.prepare(model)
        trainable, total = report_parameters(model, config.method.name)
        started = time.perf_counter()
        if t.objective == "ppo":
            from trainforge.tasks.lm.ppo import train_ppo

            trained = train_ppo(model, tokenizer, rewards, train_prompts, config, precision, run, resume, train_columns)
            steps, value_head = trained["steps"], trained["value_head"]
        else:
            trainer = build_trl_trainer(
                model,
                tokenizer,
                rewards,
                train_prompts,
                train_columns,
                config,
                run,
                [MetricsLogger(run), ShareCheckpoints(run), FiniteLossGuard(), *(callbacks or [])],
            )
            checkpoint = resume_checkpoint(run, resume)  # the Trainer restores weights, optimizer, RNG, data order
            steps = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None).global_step
            model, value_head = trainer.model, None
        train_seconds = time.perf_counter() - started
        with atomic_dir(run.path / ("adapter" if method.saves_adapter else "model")) as tmp:
            method.save(model, tokenizer, tmp)
            if value_head is not None:  # with the policy, so that PPO can go on from this run
                save_file(value_head.state_dict(), str(tmp / VALUE_HEAD_FILE))
        after, samples = reward_eval(model, tokenizer, rewards, heldout, heldout_columns, config, precision)
        logged = [m for m in run.metrics() if "reward" in m]
        summary = {
            "method": config.method.name,
            "model": config.model.name,
            "objective": t.objective,
            "steps": steps,
            "train_seconds": round(train_seconds, 1),
            "trainable_params": trainable,
            "total_params": total,
            "precision": precision,
            "first_reward": logged[0]["reward"] if logged else None,
            "last_reward": logged[-1]["reward"] if logged else None,
            "last_kl": logged[-1].get("kl") if logged else None,
        }
        named = [r.name for r in rewards] if config.reward.functions else []
        for name in named:  # each named reward's rollout mean at the first and last logged step
            means = [m[f"rewards/{name}/mean"] for m in logged if f"rewards/{name}/mean" in m]
            if means:
                summary[f"rewards/{name}"] = [round(means[0], 4), round(means[-1], 4)]
        png = reward_kl_png(run.metrics(), named)
        comparison = finish_with_scores(
            run,
            config,
            summary,
            before,
            after,
            samples,
            figures=[("Reward and KL to the reference", png)] if png else None,
        )
    print_summary(run, summary, comparison, [*SUMMARY_KEYS, *(k for k in summary if k.startswith("rewards/"))])
    return run
