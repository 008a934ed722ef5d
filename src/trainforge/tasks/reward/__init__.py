"""Task reward: a reward model trained on preference pairs (task.py)."""
