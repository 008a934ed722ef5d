"""Save and load the fitted pipeline. skops first: loading it runs no arbitrary code, only types we allow.
If skops cannot write the model, joblib (pickle) with a clear warning: only load such a file from a run you trust."""

from __future__ import annotations

import warnings
from pathlib import Path

from rich.console import Console

from trainforge.errors import RunError

console = Console(stderr=True)
SKOPS, JOBLIB = "model.skops", "model.joblib"
# Types from these packages may be rebuilt on load; everything else in a skops file is refused.
ALLOWED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "lightgbm.", "xgboost.", "trainforge.classical.", "builtins.",
                    "collections.", "pandas.")


def save_model(pipeline, folder: Path) -> Path:
    """Write the pipeline to `folder/model.skops` (verified to load back), else `folder/model.joblib`."""
    import skops.io as sio

    target = folder / SKOPS
    try:
        sio.dump(pipeline, target)
        _load_skops(target)
        return target
    except Exception as err:  # noqa: BLE001 - skops refuses many kinds of objects, each its own way
        target.unlink(missing_ok=True)
        reason = f"{type(err).__name__}: {err}"
    import joblib

    target = folder / JOBLIB
    joblib.dump(pipeline, target)
    console.print(f"[bold yellow]warning:[/] skops could not save this model ({reason}); saved {target} with joblib "
                  "instead. joblib files are pickles: loading one can run arbitrary code, so load it only from a run "
                  "you trust.")
    return target


def _load_skops(path: Path):
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    refused = [t for t in untrusted if not t.startswith(ALLOWED_PREFIXES)]
    if refused:
        raise RunError(f"{path} holds types trainforge does not load: {', '.join(refused)}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # version notes from the libraries; the types are checked above
        return sio.load(path, trusted=untrusted)


def load_model(folder: Path):
    folder = Path(folder)
    if (folder / SKOPS).is_file():
        return _load_skops(folder / SKOPS)
    if (folder / JOBLIB).is_file():
        import joblib

        console.print(f"[bold yellow]warning:[/] loading {folder / JOBLIB} with joblib (a pickle): this runs code from "
                      "the file; do it only for runs you trust.")
        return joblib.load(folder / JOBLIB)
    raise RunError(f"Run {folder} has no saved model ({SKOPS} or {JOBLIB}); did the run finish?")
