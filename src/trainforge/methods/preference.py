"""Preference trainers for a language model: TRL's DPOTrainer (objective dpo, with any of its loss types), ORPOTrainer
(orpo) and CPOTrainer (cpo, and simpo: its SimPO loss without the NLL term) on `prompt / chosen / rejected` pairs,
KTOTrainer (kto) on unpaired `prompt / completion / label` rows or on pairs split into them; RewardTrainer for a
reward model (task reward). Any method (full, lora, ...) trains."""

from __future__ import annotations

import torch
from rich.console import Console

from trainforge.hardware import unwrapped
from trainforge.methods import shared_prefix
from trainforge.methods.chunked_loss import IGNORE
from trainforge.methods.speedups import tune_model_for_training
from trainforge.methods.training_args import trainer_arguments, with_early_stopping

console = Console(stderr=True)
PAIR_KEYS = ("prompt", "chosen", "rejected")
UNPAIRED_KEYS = ("prompt", "completion", "label")
REFERENCE_OBJECTIVES = ("dpo", "kto")  # scored against a frozen reference model
TRAIN_METRICS = ("rewards/margins", "rewards/accuracies", "margin", "accuracy")  # preference, reward: in summaries


def pair_dataset(rows: list[dict], keys: tuple[str, ...] = PAIR_KEYS):
    """The rows as TRL's conversational preference dataset (other keys, e.g. `constraint`, left out)."""
    from datasets import Dataset

    return Dataset.from_list([{k: r[k] for k in keys} for r in rows]) if rows else None


def unpaired_dataset(rows: list[dict], seed: int):
    """KTO's rows: unpaired ones as they are, pairs split by TRL into their chosen (label true) and rejected (label
    false) answers; shuffled once with the run's seed, since KTOTrainer reads them in order (each row's KL answer is
    its neighbour's in the batch) and the split puts a thousand pairs' chosen answers before their rejected ones."""
    from trl.data_utils import unpair_preference_dataset

    if not rows:
        return None
    if "chosen" in rows[0]:
        return unpair_preference_dataset(pair_dataset(rows)).shuffle(seed=seed).flatten_indices()
    return pair_dataset(rows, UNPAIRED_KEYS).shuffle(seed=seed).flatten_indices()


def trainer_wraps_adapter(config, method) -> bool:
    """DPO or KTO with an adapter method: the trainer wraps the base model itself, so its reference is the base with
    the adapter disabled (a model wrapped beforehand would get a second, frozen copy of the adapter as reference)."""
    return config.training.objective in REFERENCE_OBJECTIVES and method.saves_adapter


def build_preference_trainer(model, prep, run, callbacks: list):
    """DPO or KTO (reference: the base with adapters disabled, or log-probs precomputed once for full fine-tuning,
    so no second model copy stays in memory); ORPO, CPO or SimPO (no reference at all)."""
    config, t = prep.config, prep.config.training
    if trainer_wraps_adapter(config, prep.method):
        model.requires_grad_(False)  # the bare base, all of it frozen once the trainer adds the adapter
    tune_model_for_training(model, t.attention, t.max_length, t.precision)
    common = dict(**trainer_arguments(config, run, bool(prep.eval_rows)), max_length=t.max_length, beta=t.beta)
    kwargs = dict(model=model, processing_class=prep.tokenizer, callbacks=with_early_stopping(config, callbacks))
    if t.objective in REFERENCE_OBJECTIVES:
        adapter = prep.method.saves_adapter  # then `model` is the bare base (see trainer_wraps_adapter)
        common["precompute_ref_log_probs"] = not adapter
        kwargs["peft_config"] = prep.method.peft_config() if adapter else None
    if t.objective == "kto":
        train, held_out = (unpaired_dataset(rows, t.seed) for rows in (prep.train_rows, prep.eval_rows))
        return _kto_trainer(t, common, dict(kwargs, train_dataset=train, eval_dataset=held_out))
    kwargs |= dict(train_dataset=pair_dataset(prep.train_rows), eval_dataset=pair_dataset(prep.eval_rows))
    if t.objective == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer_class = shared_prompt_trainer(DPOTrainer) if t.shared_prompt else DPOTrainer
        return trainer_class(args=DPOConfig(**common, **dpo_losses(t)), **kwargs)
    return _reference_free_trainer(t, common, kwargs)


def dpo_losses(t) -> dict:
    """DPOConfig's loss keys; `dpo_sft_weight` w is shorthand for loss_type [sigmoid, sft] weighted [1, w]."""
    if t.dpo_sft_weight:
        # DPO alone can raise the margin by lowering both answers' likelihoods; the SFT term holds the chosen one up
        return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, t.dpo_sft_weight]}
    return {"loss_type": t.loss_type or "sigmoid", "loss_weights": t.loss_weights, "label_smoothing": t.label_smoothing}


def _kto_trainer(t, common: dict, kwargs: dict):
    from trl import KTOConfig, KTOTrainer

    if t.shared_prompt and t.batch_size % 2:
        console.print(
            f"[yellow]shared_prompt:[/] kto runs a batch's rows two by two; with `training.batch_size` {t.batch_size} "
            "(odd) its training batches run TRL's forward"
        )
    args = KTOConfig(
        **common,
        loss_type=t.loss_type or "kto",
        desirable_weight=t.kto_desirable_weight,
        undesirable_weight=t.kto_undesirable_weight,
    )
    return (shared_prompt_trainer(KTOTrainer) if t.shared_prompt else KTOTrainer)(args=args, **kwargs)


def _reference_free_trainer(t, common: dict, kwargs: dict):
    """ORPO, or CPO (simpo: CPO's SimPO loss without its NLL term, as TRL's `alphapo` shorthand sets it)."""
    # the Trainer's own count needs an `input_ids` key, which these batches lack: the subclass counts
    common = {**common, "include_num_input_tokens_seen": "no"}
    if t.objective == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        trainer_class, args = ORPOTrainer, ORPOConfig(**common)
        # ORPO's NLL term scores the chosen row whole, prompt included; its odds ratio the mean answer log-prob
        forward = dict(nll_on_prompt=True, averaged=lambda trainer: True)
    else:
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        losses = (
            dict(loss_type="simpo", cpo_alpha=0.0, simpo_gamma=t.simpo_gamma)
            if t.objective == "simpo"
            else dict(loss_type=t.loss_type or "sigmoid", cpo_alpha=t.cpo_alpha)
        )
        trainer_class, args = CPOTrainer, CPOConfig(**common, label_smoothing=t.label_smoothing, **losses)
        # CPO's NLL term scores the chosen answer; its ipo and simpo losses the mean answer log-prob, the others the sum
        forward = dict(nll_on_prompt=False, averaged=lambda trainer: trainer.loss_type in ("ipo", "simpo"))
    trainer_class = token_counting_pair_trainer(trainer_class)
    if t.shared_prompt:
        trainer_class = shared_prompt_pair_trainer(trainer_class, **forward)
    return trainer_class(args=args, **kwargs)


def _share(model) -> bool:
    """Wrap `model` so that its fused-head calls on pair batches run each prompt once; whether it could be."""
    if not shared_prefix.usable(model):
        return False
    shared_prefix.share_pair_prefixes(model)  # a no-op for a model already wrapped
    return True


def _say_not_shared(model) -> None:
    base = unwrapped(model)
    console.print(
        "[yellow]shared_prompt:[/] TRL's two-row forward: a prompt runs once only in plain causal LMs with eager or "
        f"SDPA attention, without a prompt-learning adapter or MoE router loss (this one: {type(base).__name__}, "
        f"attention {base.config._attn_implementation})"
    )


def shared_prompt_trainer(reference_trainer):
    """A DPOTrainer / KTOTrainer subclass whose fused-LM-head forward (methods.shared_prefix) runs each pair's prompt
    once, in training and in the reference log-probs it precomputes for full fine-tuning while it is being built, and
    scores tokens with trainforge's chunked head. TRL computes every DPO loss type from the same log-probs. KTO's rows
    are unpaired: rows i and B/2 + i of a batch of B run as one pair, sharing the tokens they start with in common (a
    chat template's system prompt), which is exact for any two rows. Built from the class passed in because trl is
    imported only when a preference trainer is."""

    class SharedPromptTrainer(reference_trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if not _share(self.model):
                _say_not_shared(self.model)

        def _precompute_ref_logps(self, dataset, name, batch_size):
            _share(self.ref_model or self.model)
            return super()._precompute_ref_logps(dataset, name, batch_size)

    return SharedPromptTrainer


def token_counting_pair_trainer(pair_trainer):
    """An ORPOTrainer / CPOTrainer subclass that counts the trained tokens (both rows of each pair, padding left out,
    as the Trainer counts DPO's) and logs them as `num_input_tokens_seen`, whence the run's tokens/s."""

    class TokenCountingPairTrainer(pair_trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                seen = inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum()
                self.state.num_input_tokens_seen += int(self.accelerator.gather(seen.reshape(1)).sum())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        def log(self, logs, start_time=None):
            if "loss" in logs:
                logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
            return super().log(logs, start_time)

    return TokenCountingPairTrainer


def shared_prompt_pair_trainer(pair_trainer, nll_on_prompt: bool, averaged):
    """An ORPOTrainer / CPOTrainer subclass whose forward runs each pair's prompt once and scores tokens with the
    chunked LM head (methods.shared_prefix). TRL's runs prompt + chosen and prompt + rejected through the whole model
    and keeps the batch's full-vocabulary logits. Same log-probs (`averaged(trainer)`: per answer token, else
    summed), NLL (`nll_on_prompt`: over the whole chosen row, else its answer) and gradients; the `logits/chosen`
    and `logits/rejected` metrics average the logits of the scored positions only (TRL's also those of the prompt
    and of padding), and CPO's `nll_loss` metric is the chosen answers' NLL also where SimPO leaves it out."""

    class SharedPromptPairTrainer(pair_trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.shares_prompt = not self.is_encoder_decoder and not self.aux_loss_enabled and _share(self.model)
            if not self.shares_prompt:
                _say_not_shared(self.model)

        def concatenated_forward(self, model, batch):
            if not self.shares_prompt:
                return super().concatenated_forward(model, batch)
            pad = self.processing_class.pad_token_id  # padding ids are masked out: any valid id does
            joined = self.concatenated_inputs(batch, padding_value=pad, device=self.accelerator.device)
            ids, mask, answers = (joined[f"concatenated_{k}"] for k in ("input_ids", "attention_mask", "labels"))
            pairs = batch["chosen_labels"].shape[0]
            chosen = ids[:pairs].masked_fill(mask[:pairs] == 0, IGNORE) if nll_on_prompt else answers[:pairs]
            labels = torch.cat([chosen, answers[pairs:]])
            out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
            log_probs, scored = out.log_probs, out.label_mask
            in_answer = answers[:, 1:] != IGNORE
            answer_logps = (log_probs * in_answer).sum(-1)
            if averaged(self):
                answer_logps = answer_logps / in_answer.sum(-1)
            chosen_nll = -log_probs[:pairs].sum() / scored[:pairs].sum()
            return (
                answer_logps[:pairs],
                answer_logps[pairs:],
                out.mean_logits[:pairs][scored[:pairs]],
                out.mean_logits[pairs:][scored[pairs:]],
                chosen_nll,
            )

    return SharedPromptPairTrainer


def build_reward_trainer(model, prep, run, callbacks: list):
    """A one-score sequence classifier trained so that chosen answers score above rejected ones."""
    from trl import RewardConfig, RewardTrainer

    config = prep.config
    args = RewardConfig(**trainer_arguments(config, run, bool(prep.eval_rows)), max_length=config.training.max_length)
    return RewardTrainer(
        model=model,
        args=args,
        train_dataset=pair_dataset(prep.train_rows),
        eval_dataset=pair_dataset(prep.eval_rows),
        processing_class=prep.tokenizer,
        callbacks=with_early_stopping(config, callbacks),
    )
