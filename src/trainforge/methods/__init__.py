"""Training methods, each registered by name behind the same small interface (see base.Method)."""

# Importing the modules registers their methods.
from trainforge.methods import adapter, freeze, full, lora  # noqa: F401
from trainforge.methods.base import Method, get_method, method_names, method_tasks, register
from trainforge.methods.lora import DATA_INITS, RESIDUAL_INITS

__all__ = ["DATA_INITS", "RESIDUAL_INITS", "Method", "get_method", "method_names", "method_tasks", "register"]
