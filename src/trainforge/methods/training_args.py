"""The transformers TrainingArguments, optimizers and callbacks every Trainer-based task shares."""

from __future__ import annotations

import importlib.util

import torch
from transformers import TrainerCallback

from trainforge.errors import RunError
from trainforge.hardware import unwrapped


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def trainer_arguments(config, run, has_eval: bool) -> dict:
    """The transformers TrainingArguments every Trainer-based task shares: schedule, checkpoints into the run dir,
    evaluation and early stopping, precision, seeds."""
    t = config.training
    early = t.early_stopping
    eval_steps = t.eval_steps or (t.save_steps if early.patience else None)
    # Early stopping keeps the best checkpoint, so saving must follow evaluation.
    save_steps = eval_steps if early.patience else t.save_steps
    return dict(
        output_dir=str(run.checkpoints),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=config.evaluation.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps if t.warmup_steps is not None else t.warmup_ratio,  # a float < 1: a ratio
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        logging_first_step=True,  # the loss curve starts where training started
        logging_nan_inf_filter=False,  # a NaN step is logged as NaN, so FiniteLossGuard sees it
        eval_strategy=("steps" if eval_steps else "epoch") if has_eval else "no",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=bool(early.patience),
        metric_for_best_model=early.metric if early.patience else None,
        greater_is_better=early.greater_is_better if early.patience else None,
        bf16=t.precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        seed=t.seed,
        data_seed=t.seed,
        report_to="none",  # every log row reaches the run's trackers through metrics.jsonl (tracking/trackers.py)
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",  # trained tokens/s in metrics.jsonl for every Trainer
        **checkpointing_arguments(t.gradient_checkpointing),
        disable_tqdm=False,
        neftune_noise_alpha=t.neftune_alpha,  # the Trainer hooks the input embeddings while it trains, not in eval
        **optimizer_arguments(t),
    )


# `training.optimizer` → the optimizer transformers' Trainer builds by that name. muon: the AdamW it runs beside
# torch's Muon (configure_optimizer). adamw: fused AdamW, on CPU too (torch 2.13: its step ~5x faster than foreach).
TRANSFORMERS_OPTIM = {
    "adamw": "adamw_torch_fused",
    "adamw_8bit": "adamw_bnb_8bit",
    "adafactor": "adafactor",
    "galore": "galore_adamw",
    "apollo": "apollo_adamw",
    "muon": "adamw_torch_fused",
    "schedule_free": "schedule_free_adamw",
    "sgd": "sgd",
}
ADAM_ARGUMENTS = {"beta1": "adam_beta1", "beta2": "adam_beta2", "eps": "adam_epsilon"}
LOW_RANK_TARGETS = [r".*attn.*", r".*attention.*", r".*mlp.*"]  # GaLore / APOLLO: attention and MLP matrices
MUON_DEFAULTS = {"adjust_lr_fn": "match_rms_adamw"}  # Muon's updates at AdamW's RMS: one learning rate fits both
OPTIMIZER_PACKAGES = {"galore": "galore_torch", "apollo": "apollo_torch", "schedule_free": "schedulefree"}


def optimizer_arguments(t) -> dict:
    """TrainingArguments choosing `training.optimizer` with its `optimizer_args` (validated in the config)."""
    options = dict(t.optimizer_args)
    arguments = {"optim": TRANSFORMERS_OPTIM[t.optimizer]}
    arguments.update({ADAM_ARGUMENTS[key]: options.pop(key) for key in list(options) if key in ADAM_ARGUMENTS})
    if t.optimizer in ("galore", "apollo"):
        arguments["optim_target_modules"] = options.pop("target_modules", LOW_RANK_TARGETS)
    if t.optimizer == "sgd":
        options.setdefault("momentum", 0.9)
    if t.optimizer != "muon":  # transformers parses these from one "key=value,..." string
        arguments["optim_args"] = ",".join(f"{key}={value}" for key, value in options.items()) or None
    return arguments


def configure_optimizer(trainer, config) -> None:
    """What a Trainer does not build from its arguments: Muon beside AdamW, LoRA+ learning rates, eval-mode weights
    in schedule-free checkpoints, and GaLore / APOLLO projector state read back on resume."""
    t = config.training
    package = OPTIMIZER_PACKAGES.get(t.optimizer)
    if package and importlib.util.find_spec(package) is None:
        raise RunError(
            f"`training.optimizer: {t.optimizer}` needs the {package} package: pip install 'trainforge[optimizers]'."
        )
    ratio = config.method.lora.loraplus_lr_ratio  # the config refuses it for other methods
    if t.optimizer == "muon":
        adamw, adamw_kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, trainer.model)
        matrices = hidden_matrices(trainer.model)
        if not matrices:
            raise RunError(
                f"`training.optimizer: muon` trains 2-D hidden weight matrices, and method {config.method.name!r} "
                "trains none; choose another optimizer (e.g. adamw)."
            )
        muon_kwargs = {**MUON_DEFAULTS, **{k: v for k, v in t.optimizer_args.items() if k not in ADAM_ARGUMENTS}}
        trainer.optimizer_cls_and_kwargs = (
            MuonWithAdamW,
            dict(matrices=matrices, muon_kwargs=muon_kwargs, adamw=adamw, adamw_kwargs=adamw_kwargs),
        )
    elif ratio is not None:
        # transformers calls a "class" that is no Optimizer subclass for a builder, then builder(model, **kwargs)
        trainer.optimizer_cls_and_kwargs = (
            lambda: loraplus_optimizer,
            dict(args=trainer.args, ratio=ratio, weight_decay=t.weight_decay),
        )
    if t.optimizer == "schedule_free":
        trainer.add_callback(ScheduleFreeEvalWeights())
    if t.optimizer in ("galore", "apollo"):
        torch.serialization.add_safe_globals(projector_classes(t.optimizer))


def projector_classes(optimizer: str) -> list[type]:
    """The classes GaLore / APOLLO keep in their optimizer state (plain tensors and numbers inside): the Trainer
    reads checkpoints with `weights_only=True`, which refuses classes it is not told about."""
    if optimizer == "galore":
        from galore_torch.galore_projector import GaLoreProjector

        return [GaLoreProjector]
    from apollo_torch.random_projector import GradientProjector
    from apollo_torch.svd_projector import GaLoreProjector

    return [GradientProjector, GaLoreProjector]


def loraplus_optimizer(model, args, ratio: float, weight_decay: float):
    """peft's LoRA+ parameter groups (B matrices at `ratio` × the learning rate) on the optimizer class and
    arguments transformers resolves for `args.optim`."""
    from peft.optimizers import create_loraplus_optimizer
    from transformers import Trainer

    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    kwargs = dict(kwargs)
    return create_loraplus_optimizer(
        model,
        optimizer_cls,
        lr=kwargs.pop("lr"),
        loraplus_lr_ratio=ratio,
        loraplus_weight_decay=weight_decay,
        **kwargs,
    )


def hidden_matrices(model) -> list:
    """Muon's share: the trainable 2-D weights of the backbone (`base_model`) outside its embeddings; the LM head
    or classifier, embeddings, norms and biases stay with AdamW."""
    backbone = unwrapped(model).base_model
    embeddings = {id(p) for m in backbone.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return [p for p in backbone.parameters() if p.requires_grad and p.ndim == 2 and id(p) not in embeddings]


class MuonWithAdamW(torch.optim.Optimizer):
    """torch's Muon on `matrices`, AdamW on the other parameters, as one optimizer for the Trainer (its LR scheduler,
    gradient clipping, checkpoints): the two share this optimizer's param-group dicts and state."""

    def __init__(self, params, matrices, muon_kwargs, adamw, adamw_kwargs):
        chosen = {id(p) for p in matrices}

        def share(group: dict, muon: bool) -> dict:  # of one of the Trainer's decay / no-decay groups
            return dict(group, params=[p for p in group["params"] if (id(p) in chosen) == muon])

        muon_groups = [g for g in (share(group, True) for group in params) if g["params"]]
        adamw_groups = [g for g in (share(group, False) for group in params) if g["params"]]
        self.muon = torch.optim.Muon(muon_groups, lr=adamw_kwargs["lr"], **muon_kwargs)
        self.adamw = adamw(adamw_groups, **adamw_kwargs) if adamw_groups else None
        inner = [*self.muon.param_groups, *(self.adamw.param_groups if self.adamw else [])]
        super().__init__(inner, {"lr": adamw_kwargs["lr"]})
        self._share()

    def _share(self) -> None:
        muon_count = len(self.muon.param_groups)
        self.muon.param_groups, self.muon.state = self.param_groups[:muon_count], self.state
        if self.adamw:
            self.adamw.param_groups, self.adamw.state = self.param_groups[muon_count:], self.state

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)  # new group dicts and state: the inner two follow them
        self._share()

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        if self.adamw:
            self.adamw.step()
        return loss


class ScheduleFreeEvalWeights(TrainerCallback):
    """A schedule-free optimizer holds its training point in the weights while it trains; its evaluation point (the
    average it returns) appears on `optimizer.eval()`. The Trainer switches for its own evaluations; here also
    before every checkpoint and at the end, so checkpoints and the saved model hold the evaluation weights (the next
    training step switches back)."""

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if control.should_save:  # trainforge saves by steps (trainer_arguments): decided by now
            optimizer.eval()

    def on_train_end(self, args, state, control, optimizer=None, **kwargs):
        optimizer.eval()


def optimizer_state_bytes(optimizer) -> int | None:
    """Bytes of every tensor in the optimizer's state, counted once (also inside GaLore / APOLLO projector objects);
    None without an optimizer (a run resumed at its last step)."""
    if optimizer is None:
        return None
    seen, total = set(), 0
    pending = list(optimizer.state.values())
    while pending:
        value = pending.pop()
        if isinstance(value, torch.Tensor):
            key = (value.untyped_storage().data_ptr(), value.untyped_storage().nbytes())
            if key not in seen:
                seen.add(key)
                total += value.untyped_storage().nbytes()
        elif isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, (list, tuple)):
            pending.extend(value)
        elif hasattr(value, "__dict__"):
            pending.extend(vars(value).values())
    return total


def checkpointing_arguments(every: bool | int) -> dict:
    """Activation checkpointing under the TrainingArguments names of the installed transformers: 5.23 renamed
    gradient_checkpointing(_kwargs) to activation_checkpointing(_kwargs); GPU machines often carry an older 5.x."""
    from transformers import TrainingArguments

    name = "activation_checkpointing"
    if name not in TrainingArguments.__dataclass_fields__:
        name = "gradient_checkpointing"
    kwargs = {"use_reentrant": False, "every_n_layers": int(every)} if every else None
    return {name: bool(every), f"{name}_kwargs": kwargs}


def with_early_stopping(config, callbacks: list) -> list:
    from transformers import EarlyStoppingCallback

    early = config.training.early_stopping
    return [*callbacks, EarlyStoppingCallback(early.patience, early.threshold)] if early.patience else list(callbacks)


def as_dataset(rows):
    """Token rows as a datasets.Dataset: prepared on Arrow already, or a list made in memory."""
    from datasets import Dataset

    from trainforge.data.rows import RowView

    return rows.table if isinstance(rows, RowView) else Dataset.from_list(rows)
