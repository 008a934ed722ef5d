"""Hyperparameter search over run configs on Optuna (grid / random / TPE + pruning, RDB storage for many workers)."""
