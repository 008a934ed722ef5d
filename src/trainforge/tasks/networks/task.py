"""Task networks: networks trained from scratch on trainforge.nn's engine — torch_mlp (tabular classification /
regression), lenet (image classification), autoencoder (anomaly detection, embeddings) and the sequence networks of
nn/seq.py (lstm / gru / rnn text classification, char-lstm generation, seq2seq). Per `task:` value: how to build
the network, its loss, its validation scores and its held-out scores; the engine (nn/engine.py) trains it.
Artifacts: model/ (safetensors + architecture.json), nn.json (task, classes, threshold, ...) and, for tables,
preprocess/ (the fitted scikit-learn preprocessing pipeline)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from trainforge.config import RunConfig, load_config
from trainforge.errors import ConfigError, DataError, RunError
from trainforge.hardware import device_of, to_device
from trainforge.nn import models, seq
from trainforge.nn.data import Arrays, load_images, load_tabular
from trainforge.nn.engine import LoopSettings, fit, seed_everything
from trainforge.run.finish import finish_run, print_summary
from trainforge.tasks.registry import open_task_run
from trainforge.tracking.rundir import RunDir, atomic_write_json, atomic_write_text, read_json

console = Console(stderr=True)
INFO_FILE = "nn.json"
HEADLINE = {
    "classification": "accuracy",
    "image-classification": "accuracy",
    "regression": "rmse",
    "anomaly-detection": "roc_auc",
    "text-classification": "accuracy",
    "sequence-generation": "perplexity",
    "seq2seq": "exact_match",
}  # what `runs list` shows
CLASSIFIERS = ("classification", "image-classification", "text-classification")


# scores ---------------------------------------------------------------------------------------------------------


def classification_scores(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """The classical engine's metrics (accuracy, f1 — macro for several classes —, roc_auc, log_loss)."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    pred, labels = proba.argmax(1), list(range(proba.shape[1]))
    out = {
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(
            f1_score(
                y,
                pred,
                average="binary" if len(labels) == 2 else "macro",
                labels=labels if len(labels) > 2 else None,
                zero_division=0,
            )
        ),
    }
    try:
        out["roc_auc"] = float(
            roc_auc_score(y, proba[:, 1])
            if len(labels) == 2
            else roc_auc_score(y, proba, multi_class="ovr", labels=labels)
        )
        out["log_loss"] = float(log_loss(y, proba, labels=labels))
    except ValueError:  # a class missing from a tiny split
        pass
    return out


def regression_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    return {
        "rmse": float(root_mean_squared_error(y, pred)),
        "mae": float(mean_absolute_error(y, pred)),
        "r2": float(r2_score(y, pred)),
    }


def anomaly_scores(y: np.ndarray | None, errors: np.ndarray, threshold: float) -> dict[str, float]:
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    flagged = errors > threshold
    out = {"reconstruction_error": float(errors.mean()), "flagged_share": float(flagged.mean())}
    if y is not None and len(np.unique(y)) == 2:
        out.update(
            roc_auc=float(roc_auc_score(y, errors)),
            precision=float(precision_score(y, flagged, zero_division=0)),
            recall=float(recall_score(y, flagged, zero_division=0)),
            f1=float(f1_score(y, flagged, zero_division=0)),
        )
    return out


# batched inference ----------------------------------------------------------------------------------------------


def _batched(fn, x: np.ndarray, device, size: int = 512) -> np.ndarray:
    with torch.no_grad():
        return (
            np.concatenate(
                [fn(torch.from_numpy(x[i : i + size]).to(device)).cpu().numpy() for i in range(0, len(x), size)]
            )
            if len(x)
            else np.zeros((0,))
        )


def outputs(model, info: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """What a trained network says about inputs `x`: class probabilities, values, or reconstruction errors and
    embeddings."""
    model.eval()
    task, device = info["task"], device_of(model)
    if task in CLASSIFIERS:
        return {"proba": _batched(lambda b: model(b).softmax(-1), x, device)}
    if task == "regression":
        return {"value": _batched(lambda b: model(b)[:, 0], x, device) * info["y_scale"] + info["y_mean"]}
    return {
        "error": _batched(lambda b: ((model(b) - b) ** 2).mean(1), x, device),
        "embedding": _batched(model.encode, x, device),
    }


def scores(info: dict, model, x: np.ndarray, y: np.ndarray | None) -> dict[str, float]:
    if info["task"] in ("sequence-generation", "seq2seq"):
        return seq.scores(info, model, x, y)
    out, task = outputs(model, info, x), info["task"]
    if task in CLASSIFIERS:
        return classification_scores(y, out["proba"])
    if task == "regression":
        return regression_scores(y, out["value"])
    return anomaly_scores(y, out["error"], info["threshold"])


# augmentation ---------------------------------------------------------------------------------------------------


def augment(images: torch.Tensor, shift: int, rotate: float) -> torch.Tensor:
    """Random rotation (± `rotate` degrees) and shift (± `shift` pixels) per image, one affine resampling."""
    if not shift and not rotate:
        return images
    n, _, h, w = images.shape
    device = images.device
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(rotate)
    move = (
        torch.randint(-shift, shift + 1, (n, 2), device=device).float() if shift else torch.zeros(n, 2, device=device)
    )
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [torch.stack([cos, -sin, move[:, 0] * 2 / w], 1), torch.stack([sin, cos, move[:, 1] * 2 / h], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)


# the three tasks ------------------------------------------------------------------------------------------------


def _spec(config: RunConfig, data: Arrays) -> dict:
    if config.task in seq.SEQ_TASKS:
        return seq.spec(config, data.extra, data.classes)
    nn_cfg, shape = config.nn, data.x["train"].shape
    common = {"activation": nn_cfg.activation, "dropout": nn_cfg.dropout}
    if config.task == "image-classification":
        return {
            "kind": "lenet",
            "params": {
                "in_channels": shape[1],
                "height": shape[2],
                "width": shape[3],
                "classes": len(data.classes),
                "channels": nn_cfg.channels,
                "dense": nn_cfg.dense,
                **common,
            },
        }
    if config.task == "anomaly-detection":
        return {
            "kind": "autoencoder",
            "params": {"inputs": shape[1], "hidden": nn_cfg.hidden, "bottleneck": nn_cfg.bottleneck, **common},
        }
    outputs_ = len(data.classes) if config.task == "classification" else 1
    return {"kind": "mlp", "params": {"inputs": shape[1], "outputs": outputs_, "hidden": nn_cfg.hidden, **common}}


def _loss_fn(config: RunConfig, info: dict):
    task, aug = config.task, config.nn.augment
    if task in seq.SEQ_TASKS:
        return seq.loss_fn(task)
    if task in ("classification", "image-classification"):

        def loss(model, batch):
            x, y = batch
            if task == "image-classification" and model.training:
                x = augment(x, aug.shift, aug.rotate)
            return F.cross_entropy(model(x), y)
    elif task == "regression":

        def loss(model, batch):
            x, y = batch
            return F.mse_loss(model(x)[:, 0], (y - info["y_mean"]) / info["y_scale"])
    else:

        def loss(model, batch):
            (x,) = batch
            return F.mse_loss(model(x), x)

    return loss


def _dataset(config: RunConfig, data: Arrays, info: dict):
    from torch.utils.data import TensorDataset

    x = torch.from_numpy(data.x["train"])
    if config.task == "anomaly-detection":
        return TensorDataset(x)
    y = data.y["train"]
    return TensorDataset(x, torch.from_numpy(y.astype(np.float32 if config.task == "regression" else np.int64)))


def _validate(config: RunConfig, data: Arrays, info: dict, loss_fn):
    if not len(data.x["validation"]):
        return None
    x, y = data.x["validation"], data.y["validation"]
    dataset = _dataset(config, Arrays({"train": x}, {"train": y}, data.source), info)

    def validate(model):
        batch = to_device(dataset.tensors, device_of(model))
        return {
            "loss": float(loss_fn(model, batch)),
            **({} if config.task == "anomaly-detection" else scores(info, model, x, y)),
        }

    return validate


def prepare_data(config: RunConfig) -> tuple[Arrays, object, dict]:
    if config.task == "image-classification":
        data, pipeline = load_images(config), None
    elif config.task in seq.SEQ_TASKS:
        data, pipeline = seq.load_sequences(config), None
    else:
        data, pipeline = load_tabular(config)
    if not len(data.x["train"]):
        raise DataError(f"{data.source}: the training split is empty; raise `data.split.train` or add rows.")
    if config.training.early_stopping.patience and not len(data.x["validation"]):
        raise ConfigError(
            "`training.early_stopping.patience` needs a validation split to watch; the data has none "
            "(raise `data.split.validation`)."
        )
    info = {"task": config.task, "model": config.model.name, "classes": data.classes, **data.extra}
    if config.task == "regression":
        y = data.y["train"]
        info.update(y_mean=float(y.mean()), y_scale=float(y.std() or 1.0))  # the net learns standardized targets
    return data, pipeline, info


def train(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunDir:
    """Train, evaluate, save and record one from-scratch network run; returns its run directory."""
    data, pipeline, info = prepare_data(config)  # input checks fail before a run directory exists
    console.print(f"[bold]data:[/] {data.source} → {data.sizes()}")
    config, run = open_task_run("networks", config, resume, data.version)
    with run.failing_on_error():
        if config.training.threads:
            torch.set_num_threads(config.training.threads)
        seed_everything(config.training.seed)
        spec = _spec(config, data)
        model = models.build(spec)
        params = sum(p.numel() for p in model.parameters())
        console.print(f"[bold]model:[/] {spec['kind']} {spec['params']}: {params:,} parameters")
        loss_fn = _loss_fn(config, info)
        settings = LoopSettings.from_config(config)
        result = fit(
            model,
            loss_fn,
            _dataset(config, data, info),
            settings,
            run,
            validate=_validate(config, data, info, loss_fn),
            resume=resume,
            callbacks=callbacks,
        )
        model.eval()
        if config.task == "anomaly-detection":
            errors = outputs(model, info, data.x["train"])["error"]
            info["threshold"] = float(np.quantile(errors, config.nn.anomaly_quantile))
        summary = {
            "task": config.task,
            "model": config.model.name,
            "method": "from-scratch",
            "metric": HEADLINE[config.task],
            "parameters": params,
            "epochs": result.epochs,
            "steps": result.steps,
            "train_loss": round(result.train_loss, 6),
            "train_seconds": result.seconds,
            **{f"{p}_rows": n for p, n in data.sizes().items()},
        }
        if result.best_epoch is not None:
            summary.update(best_epoch=result.best_epoch, stopped_early=result.stopped_early)
        if config.task == "anomaly-detection":
            summary["threshold"] = round(info["threshold"], 6)
        if config.task in seq.SEQ_TASKS:
            summary["vocabulary"] = len(info["vocab"])
        for part, prefix in (("validation", "val"), ("test", "test")):
            if len(data.x[part]):
                summary.update({f"{prefix}.{k}": v for k, v in scores(info, model, data.x[part], data.y[part]).items()})
        models.save(model, spec, run.path / "model")
        if pipeline is not None:
            from trainforge.classical.artifacts import save_model

            run.file("preprocess").mkdir(exist_ok=True)
            save_model(pipeline, run.file("preprocess"))
        if data.split is not None:
            atomic_write_json(run.file("splits.json"), data.split.to_json())
        atomic_write_json(run.file(INFO_FILE), {**info, "architecture": spec})
        if config.task == "sequence-generation" and config.nn.samples:
            texts = seq.sample(
                model, info, config.nn.samples, config.nn.sample_length, config.nn.temperature, config.training.seed
            )
            atomic_write_text(run.file("samples.txt"), "\n---\n".join(texts) + "\n")
            console.print(f"[bold]sample:[/] {texts[0][:120]!r} (all in {run.file('samples.txt')})")
        shown = "test" if len(data.x["test"]) else "validation"
        figures = _figures(info, model, data.x[shown], data.y[shown], shown)
        # the network and what reloads it, as classical runs log their fitted pipeline
        finish_run(
            run,
            config,
            summary,
            figures=figures,
            artifacts=[run.path / "model", run.file(INFO_FILE), run.file("preprocess")],
        )
    print_summary(run, summary)
    return run


def _figures(info: dict, model, x: np.ndarray, y, part: str) -> list[tuple[str, bytes]]:
    """A confusion matrix (classifiers) or the reconstruction-error histogram (autoencoder) on the held-out split."""
    if not len(x) or y is None or info["task"] in ("regression", "sequence-generation", "seq2seq"):
        return []
    from trainforge.tracking.figures import png, pyplot

    out = outputs(model, info, x)
    fig, ax = pyplot().subplots(figsize=(5.5, 4), dpi=100)
    if "proba" in out:
        from sklearn.metrics import ConfusionMatrixDisplay

        ConfusionMatrixDisplay.from_predictions(
            y,
            out["proba"].argmax(1),
            labels=list(range(len(info["classes"]))),
            display_labels=[str(c) for c in info["classes"]],
            ax=ax,
            colorbar=False,
        )
        title = f"Confusion matrix ({part} split)"
    else:
        for label, name in ((0, "normal"), (1, "anomaly")):
            ax.hist(np.log10(out["error"][y == label] + 1e-12), bins=30, alpha=0.6, label=name)
        ax.axvline(np.log10(info["threshold"]), color="k", linestyle="--", label="threshold")
        ax.set_xlabel("log10 reconstruction error")
        ax.legend()
        title = f"Reconstruction error ({part} split)"
    return [(title, png(fig))]


# predict / eval on a finished run ---------------------------------------------------------------------------------


def load(run: RunDir):
    if run.status != "completed":
        raise RunError(f"Run {run.path} did not finish (status {run.status}); it has no network to use.")
    model, _ = models.load(run.path / "model")
    info = read_json(run.file(INFO_FILE))
    pipeline = None
    if run.file("preprocess").is_dir():
        from trainforge.classical.artifacts import load_model

        pipeline = load_model(run.file("preprocess"))
    return model, info, pipeline


def _image_inputs(info: dict, data: str, config: RunConfig) -> tuple[np.ndarray, list[str]]:
    """A folder of images (flat, or class subfolders) or a .npy file → model inputs and a name per image."""
    from trainforge.nn.data import image_files, read_images

    path = Path(data)
    if path.suffix == ".npy":
        from trainforge.nn.data import read_npy_images

        images = read_npy_images(path)
        names = [f"{path.name}[{i}]" for i in range(len(images))]
    elif path.is_dir():
        files = image_files(path) or sorted(f for d in path.iterdir() if d.is_dir() for f in image_files(d))
        if not files:
            raise DataError(f"{path} holds no images ({', '.join(s for s in ('.png', '.jpg', '.bmp'))}, ...).")
        images = read_images(files, info["image_shape"][1:], config.nn.grayscale)
        names = [str(f.relative_to(path)) for f in files]
    else:
        raise DataError(f"{path}: give a folder of images or a .npy array of images.")
    if list(images.shape[1:]) != info["image_shape"]:
        raise DataError(
            f"{path}: images have shape {list(images.shape[1:])}; the network was trained on "
            f"{info['image_shape']} (channels × height × width)."
        )
    return images, names


def predict(run: RunDir, data: str, out: str | None = None, **options) -> Path:
    """Predictions for a table (CSV next to it, with the input columns), for images (CSV: file, prediction) or
    for texts (seq.predict_frame)."""
    import pandas as pd

    from trainforge.classical.data import read_table

    model, info, pipeline = load(run)
    config = load_config(run.file("config.yaml"))
    if info["task"] in seq.SEQ_TASKS:
        frame = seq.predict_frame(model, info, config, data)
    elif info["task"] == "image-classification":
        x, names = _image_inputs(info, data, config)
        frame = pd.DataFrame({"input": names})
    else:
        from trainforge.nn.data import table_inputs

        frame = read_table(data)
        x = table_inputs(pipeline, frame, f"Data file {data}")
        frame = frame.copy()
    said = {} if info["task"] in seq.SEQ_TASKS else outputs(model, info, x)
    if "proba" in said:
        classes = np.asarray(info["classes"], dtype=object)
        frame["prediction"] = classes[said["proba"].argmax(1)]
        for i, c in enumerate(classes):
            frame[f"proba_{c}"] = said["proba"][:, i]
    elif "value" in said:
        frame["prediction"] = said["value"]
    elif "error" in said:
        frame["reconstruction_error"] = said["error"]
        frame["anomaly"] = said["error"] > info["threshold"]
        for i in range(said["embedding"].shape[1]):
            frame[f"embedding_{i}"] = said["embedding"][:, i]
    stem = Path(data).stem if Path(data).suffix else Path(data).name
    target = Path(out) if out else Path(data).with_name(stem + ".predictions.csv")
    frame.to_csv(target, index=False)
    return target


def evaluate(run: RunDir, data: str | None = None, **options) -> dict[str, float]:
    """Scores of a finished run on its own test split (re-read from its config), or on a table / image folder /
    labelled text file."""
    import pandas as pd

    model, info, pipeline = load(run)
    config = load_config(run.file("config.yaml"))
    if info["task"] in seq.SEQ_TASKS:
        return scores(info, model, *seq.eval_inputs(info, config, data))
    if data and info["task"] != "image-classification":
        from trainforge.classical.data import read_table
        from trainforge.classical.predict import encode_labels
        from trainforge.nn.data import table_inputs

        frame, source = read_table(data), f"Data file {data}"
        target, task = info["target"], info["task"]
        x = table_inputs(pipeline, frame, source)
        if target not in frame.columns:
            if task != "anomaly-detection":
                raise DataError(f"{source} has no column {target!r} (the target); evaluation needs the true values.")
            return scores(info, model, x, None)  # errors and flags only
        if task == "classification":
            y = encode_labels(frame[target], info["classes"], target, source, frame.attrs.get("row_base", 1))
        else:
            y = pd.to_numeric(frame[target], errors="coerce").to_numpy(dtype=np.float32)
            if np.isnan(y).any():
                raise DataError(
                    f"{source}, column {target!r} (the target) holds a value that is not a number in "
                    f"row {int(np.flatnonzero(np.isnan(y))[0]) + frame.attrs.get('row_base', 1)}."
                )
        return scores(info, model, x, y)
    if data:
        from trainforge.nn.data import labelled_images

        config = config.model_copy(
            update={"data": config.data.model_copy(update={"dataset": None, "path": data, "max_rows": None})}
        )
        images, labels, _, _ = labelled_images(config)
        return scores(info, model, images, labels)
    arrays = load_images(config) if info["task"] == "image-classification" else load_tabular(config)[0]
    if not len(arrays.x["test"]):
        raise RunError(f"Run {run.path} has no test split; evaluate it on a file with --data.")
    return scores(info, model, arrays.x["test"], arrays.y["test"])


def tuning_objective(config: RunConfig):
    from trainforge.run.trial import ValidationObjective

    return ValidationObjective(config, train, len(prepare_data(config)[0].x["validation"]), from_scratch=True)
