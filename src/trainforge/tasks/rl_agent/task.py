"""Task rl-agent: DQN (Mnih et al. 2015) on a gymnasium environment with discrete actions: epsilon-greedy acting, a replay
buffer, a target network and the Huber TD loss. Episode returns go to metrics.jsonl; the greedy policy is saved
as policy/ (safetensors + JSON) and replayed by `trainforge eval`."""

from __future__ import annotations

import random
import time

import numpy as np
import torch
from rich.console import Console
from torch import nn

from trainforge.checkpoints import load_checkpoint, save_checkpoint
from trainforge.config import RunConfig, load_config
from trainforge.errors import ConfigError
from trainforge.hardware import device_of, pick_device, to_device
from trainforge.nn.models import linear_stack, load_network, save_network
from trainforge.run.finish import finish_with_scores, print_summary
from trainforge.tasks.registry import open_task_run
from trainforge.tracking.figures import png, pyplot
from trainforge.tracking.rundir import RunDir

console = Console(stderr=True)
POLICY_DIR = "policy"


def make_env(env_id: str):
    import gymnasium as gym

    try:
        env = gym.make(env_id)
    except gym.error.Error as err:
        raise ConfigError(
            f"Key `data.env` = {env_id!r}: gymnasium cannot make it ({err}). Use an installed "
            "environment id such as CartPole-v1 or Acrobot-v1."
        ) from None
    if not isinstance(env.action_space, gym.spaces.Discrete) or len(env.observation_space.shape or ()) != 1:
        raise ConfigError(
            f"Key `data.env` = {env_id!r}: DQN needs discrete actions and a flat observation vector; "
            f"this environment has {env.action_space} and {env.observation_space}."
        )
    return env


class Replay:
    """A ring buffer of transitions, kept as tensors so that checkpoints load with torch's safe loader."""

    def __init__(self, capacity: int, obs_dim: int):
        self.obs = torch.zeros(capacity, obs_dim)
        self.next_obs = torch.zeros(capacity, obs_dim)
        self.action = torch.zeros(capacity, dtype=torch.long)
        self.reward = torch.zeros(capacity)
        self.done = torch.zeros(capacity)
        self.size = self.pos = 0

    def add(self, obs, action, reward, next_obs, done) -> None:
        i = self.pos
        self.obs[i], self.next_obs[i] = torch.as_tensor(obs), torch.as_tensor(next_obs)
        self.action[i], self.reward[i], self.done[i] = action, reward, float(done)
        self.pos = (i + 1) % len(self.obs)
        self.size = min(self.size + 1, len(self.obs))

    def sample(self, n: int, gen: torch.Generator, device="cpu"):
        """A batch drawn with the seeded CPU generator from the buffer (kept on the CPU), moved to `device`."""
        idx = torch.randint(0, self.size, (n,), generator=gen)
        return to_device(
            (self.obs[idx], self.action[idx], self.reward[idx], self.next_obs[idx], self.done[idx]), device
        )

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("obs", "next_obs", "action", "reward", "done", "size", "pos")}

    def load(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def greedy_action(net: nn.Module, obs) -> int:
    with torch.no_grad():
        return int(net(torch.as_tensor(obs, dtype=torch.float32, device=device_of(net))).argmax())


def greedy_returns(net: nn.Module, env_id: str, episodes: int, seed: int) -> list[float]:
    """Undiscounted returns of the greedy policy over `episodes` seeded episodes."""
    env, returns = make_env(env_id), []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            action = greedy_action(net, obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return returns


def random_returns(env_id: str, episodes: int, seed: int) -> list[float]:
    """The baseline: returns of uniformly random actions."""
    env, returns = make_env(env_id), []
    env.action_space.seed(seed)
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return returns


def epsilon_at(step: int, a) -> float:
    frac = min(1.0, step / max(1, a.epsilon_fraction * a.steps))
    return a.epsilon_start + frac * (a.epsilon_end - a.epsilon_start)


def train(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunDir:
    a, env_id = config.agent, config.data.env
    env = make_env(env_id)  # a bad id fails before the run directory exists
    obs_dim, n_actions = env.observation_space.shape[0], int(env.action_space.n)
    sizes = [obs_dim, *a.hidden, n_actions]
    config, run = open_task_run("rl-agent", config, resume, data=None)  # an environment, no data set
    with run.failing_on_error():
        torch.manual_seed(a.seed)
        random.seed(a.seed)
        device = pick_device()
        q, target = linear_stack(sizes).to(device), linear_stack(sizes).to(device)
        target.load_state_dict(q.state_dict())
        optimizer = torch.optim.Adam(q.parameters(), lr=a.learning_rate)
        replay, gen = Replay(a.buffer_size, obs_dim), torch.Generator().manual_seed(a.seed)
        start, episode, actions = 0, 0, []  # actions: those of the episode in progress
        best = {"step": None, "mean_return": float("-inf"), "q": None}  # with keep_best_every: the policy saved
        restored = load_checkpoint(run) if resume else None
        if restored:
            start, state = restored
            q.load_state_dict(state["q"]), target.load_state_dict(state["target"])
            optimizer.load_state_dict(state["optimizer"]), replay.load(state["replay"])
            gen.set_state(state["generator"]), random.setstate(state["random"])
            episode, best, actions = state["episode"], state.get("best", best), state.get("episode_actions", [])
        console.print(
            f"[bold]agent:[/] DQN on {env_id}, network {sizes}, {a.steps} environment steps"
            + (f", resuming at step {start}" if start else "")
        )
        # A resumed run continues the episode in progress by replaying its actions from the episode's seeded reset:
        # gymnasium environments are deterministic given the reset seed and the actions, so this rebuilds the exact
        # state (physics, wrapper counters such as the time limit, np_random) of any environment, where saving
        # `env.unwrapped.state` would be specific to each environment and miss the wrappers.
        obs, _ = env.reset(seed=a.seed + episode)
        episode_return = 0.0
        for action in actions:
            obs, reward, *_ = env.step(action)
            episode_return += float(reward)
        started = time.perf_counter()
        for step in range(start + 1, a.steps + 1):
            eps = epsilon_at(step, a)
            if random.random() < eps:
                action = random.randrange(n_actions)
            else:
                action = greedy_action(q, obs)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            replay.add(obs, action, reward, next_obs, terminated)  # a time-limit cut is not a terminal state
            obs, episode_return = next_obs, episode_return + float(reward)
            actions.append(action)
            if terminated or truncated:
                episode += 1
                run.append_metrics(
                    {"step": step, "episode": episode, "episode_return": episode_return, "epsilon": round(eps, 4)}
                )
                obs, _ = env.reset(seed=a.seed + episode)
                episode_return, actions = 0.0, []
            if step > a.learning_starts and step % a.train_every == 0:
                o, act, r, o2, d = replay.sample(a.batch_size, gen, device)
                with torch.no_grad():
                    goal = r + a.gamma * (1 - d) * target(o2).max(dim=1).values
                loss = nn.functional.smooth_l1_loss(q(o).gather(1, act[:, None]).squeeze(1), goal)
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(q.parameters(), 10.0)
                optimizer.step()
                if step % 100 == 0:
                    run.append_metrics({"step": step, "loss": round(loss.item(), 5)})
            if step % a.target_update == 0:
                target.load_state_dict(q.state_dict())
            if a.keep_best_every and (step % a.keep_best_every == 0 or step == a.steps):
                # seeds apart from the final evaluation's, so the policy is not picked on the episodes it is scored on
                score = float(np.mean(greedy_returns(q, env_id, a.eval_episodes, seed=20_000 + a.seed)))
                run.append_metrics({"step": step, "greedy_return": score})
                if score > best["mean_return"]:
                    best = {"step": step, "mean_return": score, "q": {k: v.clone() for k, v in q.state_dict().items()}}
            if step % a.save_steps == 0 and step < a.steps:
                save_checkpoint(
                    run,
                    step,
                    q.state_dict(),
                    {
                        "q": q.state_dict(),
                        "target": target.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "replay": replay.state(),
                        "generator": gen.get_state(),
                        "random": random.getstate(),
                        "episode": episode,
                        "episode_actions": actions,
                        "best": best,
                    },
                )
        env.close()
        train_seconds = time.perf_counter() - started
        if best["q"] is not None:  # DQN's greedy return swings between updates: keep the best policy seen
            q.load_state_dict(best["q"])
        save_network(run.path / POLICY_DIR, q, {"algorithm": "dqn", "env": env_id, "sizes": sizes})
        after = greedy_returns(q.eval(), env_id, a.eval_episodes, seed=10_000 + a.seed)
        before = random_returns(env_id, a.eval_episodes, seed=10_000 + a.seed)
        scores_before = {"mean_return": float(np.mean(before))}
        scores_after = {
            "mean_return": float(np.mean(after)),
            "min_return": float(np.min(after)),
            "max_return": float(np.max(after)),
        }
        summary = {
            "algorithm": "dqn",
            "env": env_id,
            "steps": a.steps,
            "episodes": episode,
            "policy_step": best["step"] or a.steps,
            "train_seconds": round(train_seconds, 1),
            "trainable_params": sum(p.numel() for p in q.parameters()),
        }
        # before: a uniformly random policy
        comparison = finish_with_scores(
            run,
            config,
            summary,
            scores_before,
            scores_after,
            figures=[("Episode return", returns_png(run.metrics()))],
            artifacts=[run.path / POLICY_DIR],
        )
    print_summary(
        run,
        summary,
        comparison,
        keys=("algorithm", "env", "steps", "episodes", "train_seconds", "before.mean_return", "after.mean_return"),
    )
    return run


def returns_png(metrics: list[dict]) -> bytes:
    plt = pyplot()
    points = [(m["step"], m["episode_return"]) for m in metrics if "episode_return" in m]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    if points:
        steps, returns = zip(*points)
        ax.plot(steps, returns, alpha=0.35, label="episode return")
        window = max(1, len(returns) // 20)
        smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, label=f"mean of {window}")
    ax.set_xlabel("environment step")
    ax.set_ylabel("return")
    ax.grid(alpha=0.3)
    ax.legend()
    return png(fig)


def evaluate(run: RunDir, data: str | None = None, episodes: int | None = None, **options) -> dict[str, float]:
    """Replay the saved greedy policy for `episodes` (default: the run's `agent.eval_episodes`)."""
    config = load_config(run.file("config.yaml"))
    net, meta = load_network(run.path / POLICY_DIR)
    returns = greedy_returns(net, meta["env"], episodes or config.agent.eval_episodes, seed=20_000 + config.agent.seed)
    return {
        "episodes": len(returns),
        "mean_return": float(np.mean(returns)),
        "min_return": float(np.min(returns)),
        "max_return": float(np.max(returns)),
    }
