from trainforge.tracking.rundir import RunDir, atomic_write_json, atomic_write_text, find_run, list_runs

__all__ = ["RunDir", "atomic_write_json", "atomic_write_text", "find_run", "list_runs"]
