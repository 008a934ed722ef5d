"""What a GAN learns from: the bundled 2-D Gaussian mixture, a scikit-learn dataset (digits: 8×8 images) or the
numeric columns of a table."""

from __future__ import annotations

import math

import numpy as np

from trainforge.errors import DataError

MIXTURE_MODES, MIXTURE_RADIUS, MIXTURE_STD = 8, 2.0, 0.05


def mixture_modes() -> np.ndarray:
    angles = 2 * math.pi * np.arange(MIXTURE_MODES) / MIXTURE_MODES
    return MIXTURE_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def gaussian_mixture(n: int, seed: int) -> np.ndarray:
    """n points, each from one of 8 Gaussians (std 0.05) evenly spaced on a circle of radius 2."""
    rng = np.random.default_rng(seed)
    modes = mixture_modes()
    return (modes[rng.integers(0, MIXTURE_MODES, n)] + rng.normal(0, MIXTURE_STD, (n, 2))).astype(np.float32)


def load_gan_rows(data, seed: int) -> tuple[np.ndarray, list[str], str]:
    """(rows × features float32, feature names, source description)."""
    if data.task:
        return gaussian_mixture(data.task_size, seed), ["x", "y"], f"bundled {data.task} ({data.task_size} points)"
    from trainforge.classical.data import bundled, read_table

    path = data.dataset or data.path or data.train
    table = bundled(data.dataset).drop(columns="target") if data.dataset else read_table(path, data.max_rows)
    numeric = table.select_dtypes("number").drop(columns=[c for c in data.drop_columns if c in table], errors="ignore")
    if numeric.shape[1] == 0 or numeric.isna().any().any():
        raise DataError(
            f"{path}: a gan run learns numeric columns without gaps; found {numeric.shape[1]} numeric "
            f"columns{' with missing values' if numeric.shape[1] else ''}. Drop or fill them first."
        )
    source = f"scikit-learn {data.dataset}" if data.dataset else str(path)
    return numeric.to_numpy(np.float32), [str(c) for c in numeric.columns], source


def mode_scores(points: np.ndarray) -> dict[str, float]:
    """How well samples cover the bundled mixture: modes holding ≥ 1% of the samples within 3 std, the share of
    samples that close to some mode, and the mean distance to the nearest mode."""
    distance = np.linalg.norm(points[:, None, :] - mixture_modes()[None], axis=2)
    nearest, closest = distance.min(axis=1), distance.argmin(axis=1)
    close = nearest < 3 * MIXTURE_STD
    counts = np.bincount(closest[close], minlength=MIXTURE_MODES)
    return {
        "modes_hit": int((counts >= 0.01 * len(points)).sum()),
        "high_quality": float(close.mean()),
        "mean_mode_distance": float(nearest.mean()),
    }
