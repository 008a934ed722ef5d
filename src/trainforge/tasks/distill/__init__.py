"""Task distill: a student trained on a teacher's outputs (`distill:`), wrapping the lm and text-classification
tasks' run flows (task.py); its finished runs are runs of the task it wraps."""
