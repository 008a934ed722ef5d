"""Task networks: networks trained from scratch on trainforge.nn's engine (task.py)."""
