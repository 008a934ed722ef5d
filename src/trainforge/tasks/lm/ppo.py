"""PPO for language models, compact (TRL no longer ships a PPO trainer): sampled rollouts, reward = the score at the
last token − kl_coef · (log π − log π_ref) per token, a value head on the policy's last hidden state, GAE, and
clipped policy and value losses over a few epochs per batch of rollouts. The reference is the policy with its
adapter disabled (LoRA / QLoRA) or a frozen copy (full fine-tuning)."""

from __future__ import annotations

import copy
import random
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from trainforge.errors import RunError
from trainforge.tasks.lm.rewards import Reward, score_all


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalized advantage estimation over response tokens [batch, T]. `mask` marks each row's real tokens, a
    prefix of the row; positions past it count as terminal. Returns (advantages, returns), zero where masked."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        next_value = values[:, t + 1] if t + 1 < rewards.size(1) else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


@dataclass
class Rollout:
    prompts: list[list[dict]]
    completions: list[str]
    ids: torch.Tensor  # [B, P + T]: left-padded prompt, then the response
    attention: torch.Tensor
    positions: torch.Tensor
    prompt_width: int
    mask: torch.Tensor  # [B, T]: response tokens up to and including the first end-of-sequence


class PPO:
    """One policy, its value head and reference; `step(prompts)` rolls out, scores and optimizes once."""

    def __init__(self, model, tokenizer, rewards: list[Reward], config, steps: int, precision: str = "fp32"):
        from transformers import get_scheduler

        self.model, self.tokenizer, self.rewards = model, tokenizer, rewards
        self.rl, self.training = config.rl, config.training
        self.precision = precision
        self.adapter = hasattr(model, "disable_adapter")  # peft: the reference is the base under the adapter
        self.reference = None if self.adapter else copy.deepcopy(model).eval().requires_grad_(False)
        hidden = model.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        params = [p for p in model.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.params = params
        t = config.training
        self.optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
        updates = steps * self.rl.ppo_epochs * self.rl.minibatches
        self.scheduler = get_scheduler(
            t.lr_scheduler, self.optimizer, num_warmup_steps=int(t.warmup_ratio * updates), num_training_steps=updates
        )

    def trainable(self) -> dict[str, torch.Tensor]:
        """The policy's trained weights (the adapter's under LoRA), by parameter name."""
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    def state(self) -> dict:
        return {
            "value_head": self.value_head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state(self, weights_file, state: dict) -> None:
        """Restores what `trainable()` (a safetensors file) and `state()` saved."""
        from safetensors.torch import load_file

        weights, params = load_file(str(weights_file)), self.trainable()
        if weights.keys() != params.keys():
            raise RunError(
                f"{weights_file} holds other weights than this run trains ({len(weights)} tensors, "
                f"{len(params)} expected); resume it with the config it was started with."
            )
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(weights[name])
        self.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def _autocast(self):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @torch.no_grad()
    def rollout(self, prompts: list[list[dict]]) -> Rollout:
        from trainforge.data.tokenize import render

        tok = self.tokenizer
        texts = [render(tok, p, add_generation_prompt=True) for p in prompts]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False, padding_side="left")
        device = next(self.model.parameters()).device
        enc = enc.to(device)
        self.model.eval()
        with self._autocast():
            out = self.model.generate(
                **enc,
                do_sample=True,
                temperature=self.rl.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=self.rl.max_new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        width = enc["input_ids"].size(1)
        response = out[:, width:]
        is_end = response == tok.eos_token_id
        last = torch.where(
            is_end.any(1), is_end.int().argmax(1), torch.full_like(is_end[:, 0], response.size(1) - 1, dtype=torch.long)
        )
        mask = (torch.arange(response.size(1), device=device)[None] <= last[:, None]).float()
        ids = torch.cat([enc["input_ids"], torch.where(mask.bool(), response, tok.pad_token_id)], 1)
        attention = torch.cat([enc["attention_mask"], mask.long()], 1)
        positions = (attention.cumsum(1) - 1).clamp(min=0)  # as generate counted them under left padding
        completions = [tok.decode(r[: int(n) + 1], skip_special_tokens=True).strip() for r, n in zip(response, last)]
        return Rollout(prompts, completions, ids, attention, positions, width, mask)

    def _forward(self, model, r: Rollout, rows, with_values: bool):
        """Per-token log-probs of the response under the sampling temperature, and the values (or None)."""
        p, n = r.prompt_width, r.mask.size(1)
        with self._autocast():  # only the response positions need the (vocabulary-wide) logits
            out = model(
                input_ids=r.ids[rows],
                attention_mask=r.attention[rows],
                position_ids=r.positions[rows],
                output_hidden_states=with_values,
                logits_to_keep=n + 1,
            )
        logits = out.logits[:, :-1].float() / self.rl.temperature
        logp = logits.log_softmax(-1).gather(-1, r.ids[rows, p:, None]).squeeze(-1)
        values = self.value_head(out.hidden_states[-1][:, p - 1 : -1].float()).squeeze(-1) if with_values else None
        return logp, values

    @torch.no_grad()
    def _reference_logp(self, r: Rollout, rows) -> torch.Tensor:
        context = self.model.disable_adapter() if self.adapter else nullcontext()
        with context:
            return self._forward(self.reference or self.model, r, rows, with_values=False)[0]

    def step(self, prompts: list[list[dict]], columns: list[dict] | None = None) -> dict[str, float]:
        """`columns`: each prompt's row columns that the rewards check against (reference answers)."""
        rl = self.rl
        r = self.rollout(prompts)
        total, each = score_all(self.rewards, r.prompts, r.completions, columns)
        scores = torch.tensor(total, dtype=torch.float32)
        rows = torch.arange(len(prompts))
        with torch.no_grad():
            old_logp, old_values = self._forward(self.model, r, rows, with_values=True)
            ref_logp = self._reference_logp(r, rows)
        kl = (old_logp - ref_logp) * r.mask
        rewards = -rl.kl_coef * kl
        rewards[rows, r.mask.sum(1).long() - 1] += scores
        advantages, returns = gae(rewards, old_values, r.mask, rl.gamma, rl.lam)
        advantages = whiten(advantages, r.mask)

        # The model stays in eval mode (dropout off): the ratio must compare the same function that sampled.
        logs: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clip_fraction": [], "approx_kl": []}
        for _ in range(rl.ppo_epochs):
            for mb in torch.randperm(len(prompts)).chunk(rl.minibatches):
                logp, values = self._forward(self.model, r, mb, with_values=True)
                m = r.mask[mb]
                ratio = torch.exp(logp - old_logp[mb])
                adv = advantages[mb]
                policy_loss = masked_mean(
                    torch.max(-adv * ratio, -adv * ratio.clamp(1 - rl.clip_range, 1 + rl.clip_range)), m
                )
                clipped = old_values[mb] + (values - old_values[mb]).clamp(-rl.value_clip_range, rl.value_clip_range)
                value_loss = 0.5 * masked_mean(torch.max((values - returns[mb]) ** 2, (clipped - returns[mb]) ** 2), m)
                loss = policy_loss + rl.vf_coef * value_loss
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, self.training.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                logs["policy_loss"].append(policy_loss.item())
                logs["value_loss"].append(value_loss.item())
                logs["clip_fraction"].append(masked_mean(((ratio - 1).abs() > rl.clip_range).float(), m).item())
                logs["approx_kl"].append(masked_mean(0.5 * (logp - old_logp[mb]) ** 2, m).item())
        return {
            "reward": scores.mean().item(),
            "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
            **({f"rewards/{n}/mean": sum(v) / len(v) for n, v in each.items()} if len(each) > 1 else {}),  # as TRL
            "kl": kl.sum(1).mean().item(),  # sequence KL to the reference, nats
            **{k: sum(v) / len(v) for k, v in logs.items()},
            "completion_length": r.mask.sum(1).mean().item(),
            "learning_rate": self.scheduler.get_last_lr()[0],
        }


def train_ppo(
    model,
    tokenizer,
    rewards: list[Reward],
    prompts: list[list[dict]],
    config,
    precision: str,
    run,
    resume: bool = False,
    columns: list[dict] | None = None,
) -> dict:
    """Runs `training.max_steps` (else epochs over the prompts) PPO steps, each step's metrics appended to the run,
    a checkpoint every `training.save_steps` steps; with `resume`, continues from the run's last complete one.
    Returns the number of steps and the trained value head."""
    from trainforge.checkpoints import load_checkpoint, restore_rng_states, rng_states, save_checkpoint

    t = config.training
    steps = t.max_steps or max(1, int(t.epochs * len(prompts) / t.batch_size))
    ppo = PPO(model, tokenizer, rewards, config, steps, precision)  # before any restore: the reference is the start
    order: list[int] = []
    rng, start = random.Random(t.seed), 0
    restored = load_checkpoint(run) if resume else None
    if restored:
        start, state = restored
        ppo.load_state(run.checkpoints / f"checkpoint-{start}" / "model.safetensors", state)
        order, rng_state = state["order"], state["prompt_rng"]
        rng.setstate((rng_state[0], tuple(rng_state[1]), rng_state[2]))
        restore_rng_states(state["rng"])
    for step in range(start + 1, steps + 1):
        batch = []
        while len(batch) < t.batch_size:  # cycle through shuffled prompts, epoch after epoch
            if not order:
                order = list(range(len(prompts)))
                rng.shuffle(order)
            batch.append(order.pop())
        row = ppo.step([prompts[i] for i in batch], [columns[i] for i in batch] if columns else None)
        run.append_metrics({"step": step, "epoch": round(step * t.batch_size / len(prompts), 4), **row})
        if step % t.save_steps == 0 and step < steps:
            save_checkpoint(
                run,
                step,
                ppo.trainable(),
                {**ppo.state(), "order": order, "prompt_rng": rng.getstate(), "rng": rng_states()},
                keep=t.save_total_limit,
            )
    return {"steps": steps, "value_head": ppo.value_head}
