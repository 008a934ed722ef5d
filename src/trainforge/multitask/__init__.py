"""Multi-task learning: one shared encoder, one head per task, per-task metrics."""
