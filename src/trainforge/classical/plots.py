"""Pictures for the run report, as PNG bytes: confusion matrix, ROC curve, residuals, feature importance, clusters."""

from __future__ import annotations

import numpy as np

from trainforge.tracking.figures import png, pyplot


def confusion_png(pipeline, X, y, classes) -> bytes:
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.6), dpi=100)
    ConfusionMatrixDisplay.from_predictions(
        y,
        pipeline.predict(X),
        labels=list(range(len(classes))),
        display_labels=[str(c) for c in classes],
        ax=ax,
        colorbar=False,
    )
    return png(fig)


def roc_png(pipeline, X, y, classes) -> bytes | None:
    from sklearn.metrics import auc, roc_curve

    if hasattr(pipeline, "predict_proba"):
        scores = pipeline.predict_proba(X)
    elif hasattr(pipeline, "decision_function"):
        scores = pipeline.decision_function(X)
    else:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.6), dpi=100)
    scores = np.asarray(scores)
    if scores.ndim == 1 or scores.shape[1] == 1:
        scores = np.column_stack([-scores.ravel(), scores.ravel()])
    pairs = [(1, str(classes[1]))] if len(classes) == 2 else [(i, str(c)) for i, c in enumerate(classes)]
    for index, label in pairs:
        if not (y == index).any() or (y == index).all():
            continue
        fpr, tpr, _ = roc_curve(y == index, scores[:, index])
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8)
    return png(fig)


def residuals_png(pipeline, X, y) -> bytes:
    plt = pyplot()
    predicted = pipeline.predict(X)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8), dpi=100)
    a.scatter(y, predicted, s=10, alpha=0.6)
    low, high = float(min(y.min(), predicted.min())), float(max(y.max(), predicted.max()))
    a.plot([low, high], [low, high], "k--", lw=0.8)
    a.set_xlabel("actual")
    a.set_ylabel("predicted")
    b.scatter(predicted, y - predicted, s=10, alpha=0.6)
    b.axhline(0, color="k", lw=0.8)
    b.set_xlabel("predicted")
    b.set_ylabel("residual (actual − predicted)")
    return png(fig)


def clusters_png(features, labels) -> bytes:
    from sklearn.decomposition import PCA

    plt = pyplot()
    points = PCA(n_components=2).fit_transform(features) if features.shape[1] > 2 else features
    fig, ax = plt.subplots(figsize=(5.5, 4.6), dpi=100)
    ax.scatter(points[:, 0], points[:, 1], c=labels, s=10, cmap="tab10")
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    return png(fig)


def importances(pipeline, X, y, scorer) -> tuple[list[str], np.ndarray] | None:
    """Native importances (trees, boosting) or |coefficients| (linear models) on model inputs; else permutation
    importance of the raw columns on the evaluation rows."""
    model = pipeline[-1]
    native = getattr(model, "feature_importances_", None)
    if native is None and getattr(model, "coef_", None) is not None:
        coef = np.abs(np.asarray(model.coef_))
        native = coef.mean(axis=0) if coef.ndim == 2 else coef
    if native is not None:
        try:
            names = [str(n) for n in pipeline[:-1].get_feature_names_out()]
        except (AttributeError, ValueError):
            names = [f"x{i}" for i in range(len(native))]
        if len(names) == len(native):
            return names, np.asarray(native, dtype=float)
    if y is None or scorer is None:
        return None
    from sklearn.inspection import permutation_importance

    rows = min(len(X), 500)
    result = permutation_importance(pipeline, X.iloc[:rows], y[:rows], scoring=scorer, n_repeats=3, random_state=0)
    return list(X.columns), result.importances_mean


def importance_figure(pipeline, X, y, scorer, top: int = 15) -> list[tuple[str, bytes | None]]:
    found = importances(pipeline, X, y, scorer)
    if found is None:
        return []
    names, values = found
    order = np.argsort(values)[::-1][:top][::-1]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(order) + 1.2), dpi=100)
    ax.barh([names[i] for i in order], values[order])
    ax.set_xlabel("importance")
    return [("Feature importance", png(fig))]


def supervised_figures(task, pipeline, X, y, classes, part: str) -> list[tuple[str, bytes | None]]:
    if task == "classification":
        return [
            (f"Confusion matrix ({part} split)", confusion_png(pipeline, X, y, classes)),
            (f"ROC curve ({part} split)", roc_png(pipeline, X, y, classes)),
        ]
    return [(f"Residuals ({part} split)", residuals_png(pipeline, X, y))]
