"""The multi-task model: a Hugging Face encoder shared by every task, mean-pooled, one linear head per task.
Its loss is the weighted sum of the per-task losses over the rows that carry each task's label."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from trainforge.errors import ModelError
from trainforge.tasks.multi_task.data import TaskSpec

HEADS_FILE = "heads.safetensors"
TASKS_FILE = "tasks.json"


class MultiTaskModel(nn.Module):
    main_input_name = "input_ids"

    def __init__(self, encoder, specs: list[TaskSpec], loss_weighting: str = "fixed"):
        super().__init__()
        self.encoder = encoder
        self.specs = specs
        self.loss_weighting = loss_weighting
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(getattr(encoder.config, "hidden_dropout_prob", 0.1))
        self.heads = nn.ModuleDict({s.name: nn.Linear(hidden, s.outputs) for s in specs})
        # uncertainty weighting: one learned log-variance per task (zeros: every task starts at its fixed weight)
        self.log_vars = nn.Parameter(torch.zeros(len(specs)), requires_grad=loss_weighting == "uncertainty")
        self.last_task_losses: dict[str, float] = {}

    @property
    def config(self):  # what Trainer and the hardware helpers read (e.g. `config.use_cache`)
        return self.encoder.config

    def gradient_checkpointing_enable(self, **kwargs):
        self.encoder.gradient_checkpointing_enable(**kwargs)

    def pooled(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Sentence embeddings: the last hidden states averaged over the real (unpadded) tokens."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        pooled = self.dropout(self.pooled(input_ids, attention_mask, token_type_ids))
        logits = {s.name: self.heads[s.name](pooled) for s in self.specs}
        out = {}
        if labels is not None:
            out["loss"] = self.loss(logits, labels)
        out.update({name: value if value.shape[-1] > 1 else value.squeeze(-1) for name, value in logits.items()})
        return out

    def loss(self, logits: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        total = logits[self.specs[0].name].new_zeros(())
        self.last_task_losses = {}
        for i, spec in enumerate(self.specs):
            has = ~torch.isnan(labels[:, i])
            if spec.weight == 0 or not has.any():  # no graph through the head: a weight-0 task's head stays put
                continue
            out, target = logits[spec.name][has], labels[has, i]
            if spec.type == "classification":
                task_loss = F.cross_entropy(out.float(), target.long())
            else:
                task_loss = F.mse_loss(out.float().squeeze(-1), target.float())
            self.last_task_losses[spec.name] = float(task_loss.detach())
            if self.loss_weighting == "uncertainty":
                task_loss = torch.exp(-self.log_vars[i]) * task_loss + self.log_vars[i]
            total = total + spec.weight * task_loss
        return total

    def save_pretrained(self, out: Path, **_) -> None:
        """The encoder as an ordinary HF folder, the heads beside it in safetensors, the tasks in tasks.json."""
        from safetensors.torch import save_file

        out = Path(out)
        self.encoder.save_pretrained(out)
        state = {f"heads.{k}": v.detach().contiguous() for k, v in self.heads.state_dict().items()}
        save_file({**state, "log_vars": self.log_vars.detach().contiguous()}, str(out / HEADS_FILE))
        (out / TASKS_FILE).write_text(
            json.dumps({"loss_weighting": self.loss_weighting, "tasks": [s.to_dict() for s in self.specs]}, indent=2)
            + "\n"
        )


def build_model(encoder_path, specs: list[TaskSpec], loss_weighting: str = "fixed") -> MultiTaskModel:
    from transformers import AutoModel

    from trainforge.models.loading import from_pretrained_noting_new_weights

    try:  # mean pooling replaces the pooler, so it is not loaded
        encoder = from_pretrained_noting_new_weights(
            AutoModel, encoder_path, dtype=torch.float32, add_pooling_layer=False
        )
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"Could not load an encoder from {encoder_path}: {type(err).__name__}: {err}") from None
    return MultiTaskModel(encoder, specs, loss_weighting)


def load_model(folder: Path) -> MultiTaskModel:
    """A saved multi-task model (see `MultiTaskModel.save_pretrained`), ready for inference."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / TASKS_FILE).is_file():
        raise ModelError(f"{folder} holds no multi-task model ({TASKS_FILE} is missing).")
    saved = json.loads((folder / TASKS_FILE).read_text())
    model = build_model(folder, [TaskSpec(**t) for t in saved["tasks"]], saved["loss_weighting"])
    state = load_file(str(folder / HEADS_FILE))
    model.heads.load_state_dict({k.removeprefix("heads."): v for k, v in state.items() if k.startswith("heads.")})
    with torch.no_grad():
        model.log_vars.copy_(state["log_vars"])
    return model.eval()
