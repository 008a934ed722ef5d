"""Task multi-task: one shared encoder, one head per task (model.py), rows labelled for any of the tasks
(data.py), the run and its hooks (task.py)."""
