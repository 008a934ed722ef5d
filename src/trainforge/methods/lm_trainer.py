"""The language-model trainer shared by full, LoRA and QLoRA: TRL's SFTTrainer on pre-tokenized rows."""

from __future__ import annotations

import torch
from rich.console import Console

from trainforge.config.schema import PREFERENCE_OBJECTIVES
from trainforge.hardware import mmap_large_allocations
from trainforge.methods.chunked_loss import supports_chunked_loss
from trainforge.methods.preference import build_preference_trainer
from trainforge.methods.shared_prefix import chunked_causal_lm_loss
from trainforge.methods.speedups import tune_model_for_training
from trainforge.methods.training_args import as_dataset, trainer_arguments, with_early_stopping

console = Console(stderr=True)


def build_lm_trainer(model, prep, run, callbacks: list, make_class=lambda cls: cls, **extra):
    """An SFTTrainer (a masked-LM Trainer for `mlm`) whose checkpoints (model, optimizer, scheduler, RNG, data
    position) land in the run dir. `make_class` derives the trainer class (e.g. distillation), `extra` its kwargs."""
    from trl import SFTConfig, SFTTrainer

    t = prep.config.training
    if t.objective == "mlm":
        return build_mlm_trainer(model, prep, run, callbacks)
    if t.objective in PREFERENCE_OBJECTIVES:
        return build_preference_trainer(model, prep, run, callbacks)
    has_eval = bool(prep.eval_rows)
    tune_model_for_training(model, t.attention, t.max_length, t.precision, packed=t.packing)
    if t.mmap_large_allocations and not torch.cuda.is_available():
        mmap_large_allocations()
    args = SFTConfig(
        **trainer_arguments(prep.config, run, has_eval),
        max_length=t.max_length,
        packing=t.packing,
        padding_free=t.packing,
    )
    trainer_callbacks = with_early_stopping(prep.config, callbacks)
    # NEFTune draws each row's noise and scales it by the batch's length: a start run once for all rows has neither
    share_start = t.shared_prompt and not t.neftune_alpha
    if t.chunked_loss and t.shared_prompt and t.neftune_alpha:
        console.print(
            "[bold]shared_prompt:[/] off: NEFTune noises every row's own embeddings (`training.neftune_alpha`)"
        )
    trainer = make_class(chunked_loss_trainer(SFTTrainer, share_start) if t.chunked_loss else SFTTrainer)(
        model=model,
        args=args,
        train_dataset=as_dataset(prep.train_rows),
        eval_dataset=as_dataset(prep.eval_rows) if has_eval else None,
        processing_class=prep.tokenizer,
        callbacks=trainer_callbacks,
        **extra,
    )
    if t.packing and "flash" not in str(getattr(model.config, "_attn_implementation", "")):
        keep_packed_rows_apart(trainer.data_collator)
    return trainer


def keep_packed_rows_apart(collator) -> None:
    """TRL's padding-free collator joins a batch's packed rows into one row of batch × max_length tokens, which
    varlen flash-attention kernels split by sequence; eager and SDPA attention instead mask that row's full square
    (a packing row of 8 × 128 tokens: 64× one row's attention scores, 8× the batch's). Here each packed row stays a
    row: position ids restart at every example and no 2D attention mask is passed, from which transformers builds
    each row's block-diagonal causal mask; the first token of each example gets no label, as in TRL's own."""
    collator.padding_free, collator.return_position_ids = False, True
    collate = collator.torch_call

    def torch_call(examples):
        batch = collate(examples)
        del batch["attention_mask"]  # transformers looks for packed examples only when no 2D mask is given
        batch["labels"][batch["position_ids"] == 0] = -100
        return batch

    collator.torch_call = torch_call


def chunked_loss_trainer(trainer_class, share_start: bool):
    """`trainer_class` whose training loss, and evaluation loss when only the loss is asked for, is the
    label-positions-only chunked cross-entropy (methods.chunked_loss) for models that support it; other models,
    and evaluations that want logits, keep the class's own loss. `share_start`: a batch's common first tokens
    run once."""

    class ChunkedLossTrainer(trainer_class):
        shared_start = share_start

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # Under DDP the forward must go through the wrapper (it arms the gradient all-reduce): the plain loss then.
            if (
                return_outputs
                or not model.training
                or self.accelerator.num_processes > 1
                or not supports_chunked_loss(self.accelerator.unwrap_model(model))
            ):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = self._chunked_loss(model, inputs, num_items_in_batch)
            # like Trainer.compute_loss: num_items_in_batch counts every rank's tokens and DDP averages gradients
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return loss

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            # An evaluation that only needs the loss skips the eval batch's full-vocabulary logits too (their fp32
            # copy is batch × length × vocab × 4 bytes: 1.6 GB for 32 rows of 256 tokens).
            unwrapped = self.accelerator.unwrap_model(model)
            if not prediction_loss_only or "labels" not in inputs or not supports_chunked_loss(unwrapped):
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            with torch.no_grad():
                loss = self._chunked_loss(model, self._prepare_inputs(inputs))
            return loss.detach(), None, None

        def _chunked_loss(self, model, inputs, num_items_in_batch=None):
            # The backbone is called directly, not through the forward that accelerate wrapped in autocast.
            with self.accelerator.autocast():
                return chunked_causal_lm_loss(
                    self.accelerator.unwrap_model(model), inputs, num_items_in_batch, share_start=self.shared_start
                )

    return ChunkedLossTrainer


def build_mlm_trainer(model, prep, run, callbacks: list):
    """Masked-LM continued pretraining: training rows are masked afresh each epoch by the collator; held-out rows
    come masked once (fixed seed), so eval_loss tracks the same perplexity the before/after table reports."""
    from transformers import (
        DataCollatorForLanguageModeling,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    has_eval = bool(prep.eval_rows)
    # No collator seed: masks then come from torch's global RNG, which checkpoints save and --resume restores.
    masking = DataCollatorForLanguageModeling(prep.tokenizer, mlm_probability=prep.config.training.mlm_probability)
    premasked = DataCollatorForTokenClassification(prep.tokenizer)

    def collate(features):
        return premasked(features) if "labels" in features[0] else masking(features)

    args = TrainingArguments(**trainer_arguments(prep.config, run, has_eval))
    return Trainer(
        model=model,
        args=args,
        train_dataset=as_dataset(prep.train_rows),
        eval_dataset=as_dataset(prep.eval_rows) if has_eval else None,
        data_collator=collate,
        processing_class=prep.tokenizer,
        callbacks=with_early_stopping(prep.config, callbacks),
    )
