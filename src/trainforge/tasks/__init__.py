"""One package per kind of run, each behind the same hooks (see registry.Task), listed in registry.py."""
