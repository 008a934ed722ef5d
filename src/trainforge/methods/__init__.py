"""Training methods, each registered by name behind the same small interface (see base.Method)."""

# Importing the modules registers their methods.
from trainforge.methods import adapter, full, lora  # noqa: F401
from trainforge.methods.base import Method, get_method, method_names, method_tasks, register

__all__ = ["Method", "get_method", "method_names", "method_tasks", "register"]
