"""Task rl-agent: a policy trained by acting in a gymnasium environment (DQN), saved and replayable (task.py)."""
