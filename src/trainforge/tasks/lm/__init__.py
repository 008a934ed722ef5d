"""Task lm: a language model trained with a Trainer objective (task.py: sft, clm, mlm, dpo, orpo, simpo, cpo,
kto), or with online RL against a reward (rl.py: ppo, grpo, rloo). Both leave a causal or masked LM that the same
hooks use."""
