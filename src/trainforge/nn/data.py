"""Inputs of the from-scratch networks, as float arrays split train / validation / test.

Tables (torch_mlp, autoencoder) go through the classical engine's loading, column kinds and preprocessing
pipeline, fitted on the training rows and saved with the run, so a table predicts the same way in both engines.
Images come from scikit-learn's 8×8 digits, a folder with one subfolder of images per class, or a folder holding
images.npy (N×H×W or N×C×H×W) and labels.npy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trainforge.classical.splits import Holdout, holdout
from trainforge.config import RunConfig
from trainforge.data.versioning import DataVersion, of_arrays, of_table
from trainforge.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class Arrays:
    """Model inputs per split, the labels / targets (None for unlabelled anomaly runs) and what describes them."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray | None]
    source: str
    classes: list | None = None
    split: Holdout | None = None
    extra: dict = field(default_factory=dict)  # saved into the run's nn.json (feature kinds, image shape, ...)
    version: DataVersion | None = None  # which data: recorded with the run (data/versioning.py)

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.x.items()}


def _parts(n: int, config: RunConfig, y, groups=None) -> Holdout:
    return holdout(n, config.data.split, config.training.seed, y, groups)


def load_tabular(config: RunConfig) -> tuple[Arrays, object]:
    """The table as scaled/encoded float arrays, and the fitted preprocessing pipeline (raw table → floats)."""
    from trainforge.classical.data import load_table
    from trainforge.classical.preprocessing import TableColumns, build_pipeline, detect_kinds

    data, pre = config.data, config.preprocessing
    table = load_table(
        data,
        config.task,
        {
            "`preprocessing.numeric`": pre.numeric,
            "`preprocessing.categorical`": pre.categorical,
            "`preprocessing.dates`": pre.dates,
        },
    )
    frame = table.frame
    not_features = {data.target, data.group_column, *data.drop_columns} - {None}
    features = [c for c in frame.columns if c not in not_features]
    kinds = detect_kinds(frame, features, pre, table.source)
    TableColumns(kinds).check(frame, table.source)
    X = frame[features]
    y = classes = None
    if config.task == "classification":
        classes = sorted(frame[data.target].unique().tolist(), key=str)
        y = np.searchsorted(np.asarray([str(c) for c in classes]), frame[data.target].astype(str).to_numpy())
    elif data.target:
        y = pd.to_numeric(frame[data.target]).to_numpy(dtype=np.float32)
    groups = frame[data.group_column].to_numpy() if data.group_column else None
    if table.parts:
        empty = np.array([], dtype=int)
        split = Holdout(table.parts["train"], table.parts.get("validation", empty), table.parts.get("test", empty))
    else:
        split = _parts(len(frame), config, y if config.task == "classification" else None, groups)
    pipeline = build_pipeline(kinds, X, pre, True, "passthrough")  # standardized inputs suit every network
    pipeline.fit(X.iloc[split.train])
    xs = {p: pipeline.transform(X.iloc[getattr(split, p)]).astype(np.float32) for p in ("train", "validation", "test")}
    ys = {p: (y[getattr(split, p)] if y is not None else None) for p in ("train", "validation", "test")}
    extra = {"target": data.target, "features": kinds}
    return Arrays(xs, ys, table.source, classes, split, extra, of_table(table, split.parts())), pipeline


def table_inputs(pipeline, frame: pd.DataFrame, source: str) -> np.ndarray:
    """A new table (predict / eval) → model inputs, its columns checked against the training columns."""
    pipeline.named_steps["columns"].check(frame, source)
    return pipeline.transform(frame).astype(np.float32)


# images ---------------------------------------------------------------------------------------------------------


def _digits() -> tuple[np.ndarray, np.ndarray, list]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32)[:, None], digits.target, list(range(10))


def read_image(path: Path, size: tuple[int, int] | None, grayscale: bool) -> np.ndarray:
    """One image → C×H×W floats in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if grayscale else "RGB")
            if size and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]))
            pixels = np.asarray(img, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"Image {path} could not be read ({err}).") from None
    return pixels[None] if grayscale else pixels.transpose(2, 0, 1)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_images(files: list[Path], size: list[int] | None, grayscale: bool) -> np.ndarray:
    """Images, all resized to `size` (default: the first image's size) so they stack."""
    if size is None and files:
        size = read_image(files[0], None, grayscale).shape[1:]
    return np.stack([read_image(f, tuple(size), grayscale) for f in files])


def read_npy_images(path: Path) -> np.ndarray:
    """N×H×W or N×C×H×W numbers → N×C×H×W floats in [0, 1] (0–255 pixels are scaled)."""
    try:
        images = np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not a NumPy array of images ({err}).") from None
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DataError(f"{path} has shape {images.shape}; expected N×H×W or N×C×H×W.")
    if images.max(initial=0) > 1.0:  # 0-255 pixels
        images = images / 255.0
    return images


def _folder(config: RunConfig) -> tuple[np.ndarray, np.ndarray, list]:
    folder = Path(config.data.path)
    if not folder.is_dir():
        raise DataError(
            f"Key `data.path` = {folder}: an image-classification run reads a folder (one subfolder of "
            "images per class, or images.npy + labels.npy); it is not a folder."
        )
    if (folder / "images.npy").is_file():
        if not (folder / "labels.npy").is_file():
            raise DataError(f"{folder} holds images.npy but no labels.npy (one label per image).")
        images, labels = read_npy_images(folder / "images.npy"), np.load(folder / "labels.npy", allow_pickle=False)
        if len(labels) != len(images):
            raise DataError(f"{folder}: images.npy holds {len(images)} images but labels.npy {len(labels)} labels.")
        classes = sorted(np.unique(labels).tolist(), key=str)
        return images, np.searchsorted(np.asarray(classes), labels), classes
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and image_files(p))
    if len(classes) < 2:
        raise DataError(
            f"{folder} needs at least two subfolders of images (one per class); found "
            f"{classes or 'none'}. Or put images.npy and labels.npy in it."
        )
    files = [(f, i) for i, c in enumerate(classes) for f in image_files(folder / c)]
    images = read_images([f for f, _ in files], config.nn.image_size, config.nn.grayscale)
    return images, np.array([i for _, i in files]), classes


def labelled_images(config: RunConfig) -> tuple[np.ndarray, np.ndarray, list, str]:
    """Every image of the run's data (N×C×H×W in [0, 1]), its class index, the class names and the source."""
    if config.data.dataset:
        (images, labels, classes), source = _digits(), "bundled dataset digits (8×8)"
    else:
        (images, labels, classes), source = _folder(config), f"image folder {config.data.path}"
    if config.data.max_rows:
        images, labels = images[: config.data.max_rows], labels[: config.data.max_rows]
    return images, labels, classes, source


def load_images(config: RunConfig) -> Arrays:
    images, labels, classes, source = labelled_images(config)
    split = _parts(len(images), config, labels if config.data.split.strategy == "stratified" else None)
    xs = {p: images[getattr(split, p)] for p in ("train", "validation", "test")}
    ys = {p: labels[getattr(split, p)] for p in ("train", "validation", "test")}
    version = of_arrays(xs, ys, split.parts())
    return Arrays(xs, ys, source, classes, split, {"image_shape": list(images.shape[1:])}, version)
