"""Online RL of language models against a reward: PPO (ppo.py), TRL's GRPO and RLOO (run.py)."""
