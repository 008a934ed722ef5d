"""Preference trainers on `prompt / chosen / rejected` pairs: TRL's DPOTrainer and ORPOTrainer for a language
model (objectives dpo / orpo), RewardTrainer for a reward model (task reward). Any method (full, lora, ...) trains."""

from __future__ import annotations

import torch

from trainforge.methods import shared_prefix
from trainforge.methods.chunked_loss import IGNORE
from trainforge.methods.speedups import tune_model_for_training
from trainforge.methods.training_args import trainer_arguments, with_early_stopping

PAIR_KEYS = ("prompt", "chosen", "rejected")
TRAIN_METRICS = ("rewards/margins", "rewards/accuracies", "margin", "accuracy")  # DPO / ORPO, reward: in summaries


def pair_dataset(rows: list[dict]):
    """The pairs as TRL's conversational preference dataset (other keys, e.g. `constraint`, left out)."""
    from datasets import Dataset

    return Dataset.from_list([{k: r[k] for k in PAIR_KEYS} for r in rows]) if rows else None


def trainer_wraps_adapter(config, method) -> bool:
    """DPO with an adapter method: DPOTrainer wraps the base model itself, so its reference is the base with the
    adapter disabled (a model wrapped beforehand would get a second, frozen copy of the adapter as reference)."""
    return config.training.objective == "dpo" and method.saves_adapter


def build_preference_trainer(model, prep, run, callbacks: list):
    """DPO (reference: the base with adapters disabled, or log-probs precomputed once for full fine-tuning, so no
    second model copy stays in memory) or ORPO (no reference at all)."""
    config, t = prep.config, prep.config.training
    if trainer_wraps_adapter(config, prep.method):
        model.requires_grad_(False)  # the bare base, all of it frozen once DPOTrainer adds the adapter
    tune_model_for_training(model, t.attention, t.max_length, t.precision)
    common = dict(**trainer_arguments(config, run, bool(prep.eval_rows)), max_length=t.max_length, beta=t.beta)
    kwargs = dict(
        model=model,
        train_dataset=pair_dataset(prep.train_rows),
        eval_dataset=pair_dataset(prep.eval_rows),
        processing_class=prep.tokenizer,
        callbacks=with_early_stopping(config, callbacks),
    )
    if t.objective == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        trainer_class = token_counting_orpo_trainer(ORPOTrainer)
        if t.shared_prompt:
            trainer_class = shared_prompt_orpo_trainer(trainer_class)
        # the Trainer's own count needs an `input_ids` key, which ORPO batches lack: the subclass counts
        return trainer_class(args=ORPOConfig(**{**common, "include_num_input_tokens_seen": "no"}), **kwargs)
    from trl import DPOConfig, DPOTrainer

    adapter = prep.method.saves_adapter  # then `model` is the bare base (see trainer_wraps_adapter)
    # DPO alone can raise the margin by lowering both answers' likelihoods; the SFT term holds the chosen one up
    losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, t.dpo_sft_weight]} if t.dpo_sft_weight else {}
    args = DPOConfig(**common, precompute_ref_log_probs=not adapter, **losses)
    trainer_class = shared_prompt_dpo_trainer(DPOTrainer) if t.shared_prompt else DPOTrainer
    return trainer_class(args=args, peft_config=prep.method.peft_config() if adapter else None, **kwargs)


def _share(model) -> bool:
    """Wrap `model` so that its fused-head calls on pair batches run each prompt once; whether it could be."""
    if not shared_prefix.usable(model):
        return False
    shared_prefix.share_pair_prefixes(model)  # a no-op for a model already wrapped
    return True


def shared_prompt_dpo_trainer(dpo_trainer):
    """A DPOTrainer subclass that runs each pair's prompt once (methods.shared_prefix) in training and in the
    reference log-probs it precomputes for full fine-tuning while it is being built. Built from the class passed in
    because trl is imported only when a preference trainer is."""

    class SharedPromptDPOTrainer(dpo_trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            _share(self.model)

        def _precompute_ref_logps(self, dataset, name, batch_size):
            _share(self.ref_model or self.model)
            return super()._precompute_ref_logps(dataset, name, batch_size)

    return SharedPromptDPOTrainer


def token_counting_orpo_trainer(orpo_trainer):
    """An ORPOTrainer subclass that counts the trained tokens (both rows of each pair, padding left out, as the
    Trainer counts DPO's) and logs them as `num_input_tokens_seen`, whence the run's tokens/s."""

    class TokenCountingORPOTrainer(orpo_trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                seen = inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum()
                self.state.num_input_tokens_seen += int(self.accelerator.gather(seen.reshape(1)).sum())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        def log(self, logs, start_time=None):
            if "loss" in logs:
                logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
            return super().log(logs, start_time)

    return TokenCountingORPOTrainer


def shared_prompt_orpo_trainer(orpo_trainer):
    """An ORPOTrainer subclass whose forward runs each pair's prompt once and scores tokens with the chunked LM head
    (methods.shared_prefix). TRL's runs prompt + chosen and prompt + rejected through the whole model and keeps
    the batch's full-vocabulary logits. Same log-probs, NLL and gradients; the `logits/chosen` and
    `logits/rejected` metrics average the logits of the scored positions only (TRL's also those of the rejected
    row's prompt and of padding)."""

    class SharedPromptORPOTrainer(orpo_trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.shares_prompt = not self.is_encoder_decoder and not self.aux_loss_enabled and _share(self.model)

        def concatenated_forward(self, model, batch):
            if not self.shares_prompt:
                return super().concatenated_forward(model, batch)
            joined = self.concatenated_inputs(batch, padding_value=self.padding_value, device=self.accelerator.device)
            ids, mask, answers = (joined[f"concatenated_{k}"] for k in ("input_ids", "attention_mask", "labels"))
            pairs = batch["chosen_labels"].shape[0]
            # ORPO's NLL term scores the chosen row whole, prompt included; its odds ratio the answers alone
            labels = torch.cat([ids[:pairs].masked_fill(mask[:pairs] == 0, IGNORE), answers[pairs:]])
            out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
            log_probs, scored = out.log_probs, out.label_mask
            in_answer = answers[:, 1:] != IGNORE
            answer_logps = (log_probs * in_answer).sum(-1) / in_answer.sum(-1)
            chosen_nll = -log_probs[:pairs].sum() / scored[:pairs].sum()
            return (
                answer_logps[:pairs],
                answer_logps[pairs:],
                out.mean_logits[:pairs][scored[:pairs]],
                out.mean_logits[pairs:][scored[pairs:]],
                chosen_nll,
            )

    return SharedPromptORPOTrainer


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
