"""Save and load the fitted pipeline. skops first: loading it runs no arbitrary code, only types we allow.
If skops cannot write the model, joblib (pickle) with a clear warning: only load such a file from a run you trust."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from rich.console import Console

from trainforge.errors import RunError

console = Console(stderr=True)
SKOPS, JOBLIB = "model.skops", "model.joblib"
RECORD = "artifacts.json"  # sha256 of each pickle this run wrote: a pickle it did not write is not loaded unasked
TRUST_ENV = "TRAINFORGE_TRUST_PICKLE"  # "1": load pickles from anywhere (set by `trainforge --trust-pickle`)
# Types from these packages may be rebuilt on load; everything else in a skops file is refused.
ALLOWED_PREFIXES = (
    "sklearn.",
    "numpy.",
    "scipy.",
    "lightgbm.",
    "xgboost.",
    "trainforge.classical.",
    "builtins.",
    "collections.",
    "pandas.",
)


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

    from trainforge.tracking.rundir import atomic_write_json

    target = folder / JOBLIB
    joblib.dump(pipeline, target)
    atomic_write_json(folder / RECORD, {JOBLIB: {"sha256": _sha256(target)}})
    console.print(
        f"[bold yellow]warning:[/] skops could not save this model ({reason}); saved {target} with joblib "
        "instead. joblib files are pickles: loading one can run arbitrary code, so load it only from a run "
        "you trust."
    )
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_pickle_origin(folder: Path, trust_pickle: bool) -> None:
    """Refuse a pickle that is not the one this trainforge run wrote, unless the user says to trust it."""
    if trust_pickle or os.environ.get(TRUST_ENV) == "1":
        return
    path = folder / JOBLIB
    try:
        recorded = json.loads((folder / RECORD).read_text(encoding="utf-8"))[JOBLIB]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if (folder / "run.json").is_file() and recorded == _sha256(path):
        return
    why = (
        "is not in a trainforge run directory (no run.json)"
        if not (folder / "run.json").is_file()
        else f"is not the file this run wrote (its sha256 is not the one recorded in {RECORD})"
    )
    raise RunError(
        f"{path} {why}. It is a pickle: loading it runs whatever code it holds. If you trust where it "
        f"came from, load it with `trainforge --trust-pickle ...` (or {TRUST_ENV}=1)."
    )


def load_model(folder: Path, trust_pickle: bool = False):
    folder = Path(folder)
    if (folder / SKOPS).is_file():
        return _load_skops(folder / SKOPS)
    if (folder / JOBLIB).is_file():
        import joblib

        _check_pickle_origin(folder, trust_pickle)

        console.print(
            f"[bold yellow]warning:[/] loading {folder / JOBLIB} with joblib (a pickle): this runs code from "
            "the file; do it only for runs you trust."
        )
        return joblib.load(folder / JOBLIB)
    raise RunError(f"Run {folder} has no saved model ({SKOPS} or {JOBLIB}); did the run finish?")
