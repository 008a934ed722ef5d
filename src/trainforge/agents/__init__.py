"""Task rl-agent: a policy trained by acting in a gymnasium environment (DQN), saved and replayable."""

from pathlib import Path

POLICY_DIR = "policy"


def is_agent(run) -> bool:
    """Whether a run directory holds a trained policy (cheap: no torch import)."""
    return (Path(run.path) / POLICY_DIR / "config.json").is_file()
