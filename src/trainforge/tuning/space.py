"""Search spaces: config keys → ParamSpace. A trial is "the run config with these keys overridden"."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import numpy as np

from trainforge.config.schema import ParamSpace


def config_key(key: str) -> str:
    """`max_depth` → `model.params.max_depth`; a dotted key is already a config key."""
    return key if "." in key else f"model.params.{key}"


def suggest(trial, key: str, spec: ParamSpace) -> Any:
    if spec.type == "categorical":
        return trial.suggest_categorical(key, spec.choices)
    if spec.type == "int":
        step = int(spec.step or 1)
        return trial.suggest_int(key, int(spec.low), int(spec.high), step=1 if spec.log else step, log=spec.log)
    return trial.suggest_float(key, spec.low, spec.high, log=spec.log, step=None if spec.log else spec.step)


def grid_values(spec: ParamSpace, points: int) -> list:
    if spec.grid is not None:
        return list(spec.grid)
    if spec.type == "categorical":
        return list(spec.choices)
    values = np.geomspace(spec.low, spec.high, points) if spec.log else np.linspace(spec.low, spec.high, points)
    if spec.type == "float":
        return [float(f"{v:.6g}") for v in values]
    step = 1 if spec.log else int(spec.step or 1)
    on_lattice = [int(spec.low + round((v - spec.low) / step) * step) for v in values]
    return sorted(set(on_lattice))


def grid(space: dict[str, ParamSpace], points: int, seed: int) -> list[dict[str, Any]]:
    """Every combination, in a seeded random order (so a cut-short grid still covers the space evenly)."""
    keys = sorted(space)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(grid_values(space[k], points) for k in keys))]
    random.Random(seed).shuffle(combos)
    return combos


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and isinstance(b[k], float) and math.isclose(a[k], b[k])) or a[k] == b[k] for k in a
    )
