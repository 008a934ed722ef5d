"""The distillation loss: alpha × T² × KL(teacher ‖ student) at temperature T + (1 - alpha) × the hard-label loss,
added to whichever transformers Trainer the task uses (SFTTrainer for LMs, Trainer for classifiers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainforge.data.tokenize import IGNORE

TEACHER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def distillation_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over the selected positions of KL(softmax(t/T) ‖ softmax(s/T)), times T² so its gradient keeps the scale
    of the hard loss (Hinton et al. 2015)."""
    if mask is not None:
        student_logits, teacher_logits = student_logits[mask], teacher_logits[mask]
    student_logits = student_logits.reshape(-1, student_logits.size(-1)).float()
    teacher_logits = teacher_logits.reshape(-1, teacher_logits.size(-1)).float()
    if student_logits.numel() == 0:
        return student_logits.sum()
    kl = F.kl_div(
        F.log_softmax(student_logits / temperature, -1),
        F.log_softmax(teacher_logits / temperature, -1),
        log_target=True,
        reduction="batchmean",
    )
    return kl * temperature**2


class DistillationMixin:
    """Put before a Trainer class: `class T(DistillationMixin, Trainer)`. The teacher runs frozen beside the model;
    the mean KL of the logged steps is written as `kl_loss` next to `loss`."""

    def __init__(self, *args, teacher, temperature: float, alpha: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha
        self._kl: list[float] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # One plain forward for the hard loss and the logits: TRL's SFTTrainer computes its loss through a fused LM
        # head that never builds logits with gradients, so its compute_loss cannot be reused here.
        extra = {"use_cache": False} if "CausalLM" in type(self.accelerator.unwrap_model(model)).__name__ else {}
        outputs = model(**inputs, **extra)
        with torch.no_grad():
            teacher_logits = self.teacher(**{k: v for k, v in inputs.items() if k in TEACHER_INPUTS}, **extra).logits
        logits = outputs.logits
        mask = None
        if logits.dim() == 3:  # causal LM: position t predicts token t+1; only answer tokens carry labels
            logits, teacher_logits = logits[:, :-1], teacher_logits[:, :-1]
            mask = inputs["labels"][:, 1:] != IGNORE
        kl = distillation_kl(logits, teacher_logits, self.temperature, mask)
        if model.training:
            self._kl.append(kl.item())
        loss = self.alpha * kl + (1 - self.alpha) * outputs.loss
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs):
        if "loss" in logs and self._kl:
            logs["kl_loss"] = round(sum(self._kl) / len(self._kl), 6)
            self._kl = []
        super().log(logs, *args, **kwargs)


def distilling(trainer_class):
    """`trainer_class` with the distillation loss (one subclass per Trainer class)."""
    return type(f"Distilling{trainer_class.__name__}", (DistillationMixin, trainer_class), {})
