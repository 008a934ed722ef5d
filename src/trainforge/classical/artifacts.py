"""Save and load the fitted pipeline. skops first: loading it runs no arbitrary code, only types we allow.
If skops cannot write the model, joblib (pickle) with a clear warning, signed with an HMAC keyed by a per-user
secret kept outside the run (`$TRAINFORGE_HOME/signing.key`): a pickle this machine's trainforge did not sign is
not loaded unless the user says to trust it. A hash beside the pickle would prove nothing: whoever can replace the
pickle can rewrite the hash too."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import secrets
import time
import warnings
import zipfile
import zlib
from pathlib import Path

from rich.console import Console

from trainforge.errors import RunError

console = Console(stderr=True)
SKOPS, JOBLIB = "model.skops", "model.joblib"
COLUMNS = "columns.json"  # trainforge's column checks of a tabular model, kept out of the model file
RECORD = "artifacts.json"  # the HMAC-SHA256 of each pickle this run wrote, keyed by the user's signing key
TRUST_ENV = "TRAINFORGE_TRUST_PICKLE"  # "1": load pickles from anywhere (set by `trainforge --trust-pickle`)
HOME_ENV = "TRAINFORGE_HOME"  # per-user settings folder; default ~/.config/trainforge
KEY_FILE = "signing.key"
KEY_BYTES = 32
# Prefixed to the pickle before signing: a signature made for anything else never passes for a model's.
SIGNED = b"trainforge model.joblib v1\0"
# Types from these packages may be rebuilt on load; everything else in a skops file is refused.
ALLOWED_PREFIXES = (
    "sklearn.",
    "numpy.",
    "scipy.",
    "lightgbm.",
    "xgboost.",
    "trainforge.classical.",  # models saved before columns.json held trainforge's column step
    "builtins.",
    "collections.",
    "pandas.",
)


def key_path() -> Path:
    home = os.environ.get(HOME_ENV) or Path.home() / ".config" / "trainforge"
    return Path(home).expanduser() / KEY_FILE


def _read_key(path: Path) -> bytes | None:
    """The key in `path`, None when there is none. A file shorter than a key may be one another process has just
    created and not yet written: wait a moment for it before calling it damaged."""
    for _ in range(50):
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise RunError(f"The signing key {path} cannot be read ({err}); check its owner and permissions.") from None
        if len(key) >= KEY_BYTES:
            return key
        time.sleep(0.02)
    raise RunError(
        f"The signing key {path} holds {len(key)} bytes, not the {KEY_BYTES} trainforge writes: it is damaged. "
        "Delete it and a new one is made on the next save (pickles signed with the old key then need "
        f"`trainforge --trust-pickle`)."
    )


def signing_key(create: bool = False) -> bytes | None:
    """The user's signing key; `create`: make it (32 random bytes, mode 0600) when there is none yet."""
    path = key_path()
    if create and not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:  # O_EXCL: of two processes creating it at once, one writes it and the other reads that one
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
    return _read_key(path)


def _signature(key: bytes, data: bytes) -> str:
    return hmac.new(key, SIGNED + data, hashlib.sha256).hexdigest()


def save_model(pipeline, folder: Path) -> Path:
    """Write the pipeline to `folder/model.skops` (verified to load back), else `folder/model.joblib`. A first
    `columns` step (trainforge's column checks) goes to columns.json instead, so the saved model is plain
    scikit-learn / LightGBM / XGBoost, loadable without trainforge."""
    import skops.io as sio

    from trainforge.tracking.rundir import atomic_write_bytes, atomic_write_json

    if _columns_step(pipeline) is not None:
        atomic_write_json(folder / COLUMNS, pipeline[0].spec())
        pipeline = pipeline[1:]
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
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer)
    data = buffer.getvalue()  # signed as bytes in memory, then written: no moment where a swapped file gets signed
    entry = {"sha256": hashlib.sha256(data).hexdigest()}
    try:
        entry["hmac_sha256"] = _signature(signing_key(create=True), data)
        unsigned = ""
    except (OSError, RunError) as err:
        unsigned = (
            f" It could not be signed ({err}), so loading it will need `trainforge --trust-pickle` (or {TRUST_ENV}=1)."
        )
    atomic_write_bytes(target, data)
    atomic_write_json(folder / RECORD, {JOBLIB: entry})
    console.print(
        f"[bold yellow]warning:[/] skops could not save this model ({reason}); saved {target} with joblib "
        "instead. joblib files are pickles: loading one can run arbitrary code, so load it only from a run "
        f"you trust.{unsigned}"
    )
    return target


def _load_skops(path: Path):
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError, NotImplementedError) as err:
        raise _damaged(path, err) from None  # reading the archive and its schema: any failure is the file's
    refused = [t for t in untrusted if not t.startswith(ALLOWED_PREFIXES)]
    if refused:
        raise RunError(f"{path} holds types trainforge does not load: {', '.join(refused)}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # version notes from the libraries; the types are checked above
        try:
            return sio.load(path, trusted=untrusted)
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise _damaged(path, err) from None


def _damaged(path: Path, err: Exception) -> RunError:
    return RunError(
        f"{path} is damaged or cut short: it is not a readable skops archive ({type(err).__name__}: {err}). "
        "Train the run again, or copy its folder again if it came from elsewhere."
    )


def _check_pickle_origin(path: Path, data: bytes, trust_pickle: bool) -> None:
    """Refuse a pickle this machine's trainforge did not sign, unless the user says to trust it."""
    if trust_pickle or os.environ.get(TRUST_ENV) == "1":
        return
    try:
        recorded = json.loads((path.parent / RECORD).read_text(encoding="utf-8"))[JOBLIB]["hmac_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    key = signing_key()
    expected = _signature(key, data) if key is not None else None
    if expected and isinstance(recorded, str) and hmac.compare_digest(recorded.encode(), expected.encode()):
        return
    if not isinstance(recorded, str):
        why = f"there is no signature for it in {path.parent / RECORD}"
    elif key is None:
        why = (
            f"there is no signing key on this machine ({key_path()}), so the run was trained on another machine "
            f"or under another {HOME_ENV}"
        )
    else:
        why = (
            f"its HMAC does not match the one in {RECORD}: the file was replaced after the run wrote it, or the run "
            f"was signed with another machine's key (this one's is {key_path()})"
        )
    raise RunError(
        f"{path} is a pickle this machine's trainforge did not sign: {why}. Loading a pickle runs whatever code it "
        f"holds. If you trust where it came from, load it with `trainforge --trust-pickle ...` (or {TRUST_ENV}=1)."
    )


def _columns_step(pipeline):
    from trainforge.classical.preprocessing import TableColumns

    steps = getattr(pipeline, "steps", None)
    return steps[0][1] if steps and isinstance(steps[0][1], TableColumns) else None


def load_model(folder: Path, trust_pickle: bool = False):
    """The saved pipeline, with trainforge's column checks first again when the run saved them (columns.json)."""
    from sklearn.pipeline import Pipeline

    from trainforge.classical.preprocessing import TableColumns

    folder = Path(folder)
    model = _load_model(folder, trust_pickle)
    if not (folder / COLUMNS).is_file():
        return model
    if not isinstance(model, Pipeline):
        raise RunError(
            f"{folder} has {COLUMNS} (the column checks of a pipeline) but its model is a {type(model).__name__}, "
            "not a scikit-learn Pipeline: the files come from different runs. Train the run again."
        )
    columns = TableColumns.from_spec(json.loads((folder / COLUMNS).read_text(encoding="utf-8")))
    return Pipeline([("columns", columns), *model.steps])


def _load_model(folder: Path, trust_pickle: bool):
    if (folder / SKOPS).is_file():
        return _load_skops(folder / SKOPS)
    if (folder / JOBLIB).is_file():
        import joblib

        data = (folder / JOBLIB).read_bytes()  # checked and loaded from the same bytes: no swap in between
        _check_pickle_origin(folder / JOBLIB, data, trust_pickle)
        console.print(
            f"[bold yellow]warning:[/] loading {folder / JOBLIB} with joblib (a pickle): this runs code from "
            "the file; do it only for runs you trust."
        )
        return joblib.load(io.BytesIO(data))
    raise RunError(f"Run {folder} has no saved model ({SKOPS} or {JOBLIB}); did the run finish?")
