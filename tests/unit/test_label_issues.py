"""Likely wrong labels (cleanlab over out-of-fold probabilities): 5% of a bundled table's labels flipped at random
are found near the top of the ranking, and training without the rows found beats training on the noisy labels,
scored against the true labels of the test split."""

import numpy as np
from sklearn.metrics import accuracy_score

from _classical import tabular_config
from trainforge.classical.data import bundled
from trainforge.classical.label_issues import label_issues, ranked_label_issues
from trainforge.classical.prepare import prepare


def _noisy_table(tmp_path, share=0.05, seed=0):
    frame = bundled("breast_cancer")
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(frame), size=round(share * len(frame)), replace=False)
    truth = frame["target"].to_numpy().copy()
    frame.loc[frame.index[flipped], "target"] = 1 - truth[flipped]
    path = tmp_path / "noisy.csv"
    frame.to_csv(path, index=False)
    return path, flipped, truth


def test_flipped_labels_rank_first_and_cleaning_them_out_helps(tmp_path):
    path, flipped, truth = _noisy_table(tmp_path)
    config = tabular_config(tmp_path / "runs", data={"path": str(path), "target": "target", "dataset": None})
    prep = prepare(config)
    ranked, _ = ranked_label_issues(prep)
    top = set(ranked[: len(flipped)].tolist())
    precision = len(top & set(flipped.tolist())) / len(flipped)  # of the top 5%, the share that was flipped
    recall = len(set(ranked.tolist()) & set(flipped.tolist())) / len(flipped)
    assert precision >= 0.75 and recall >= 0.9, (precision, recall)  # measured: 0.86 and 0.96

    train, test = prep.split.train, prep.split.test
    kept = np.setdiff1d(train, ranked)
    noisy = prep.pipeline().fit(prep.X.iloc[train], prep.y[train])
    cleaned = prep.pipeline().fit(prep.X.iloc[kept], prep.y[kept])
    true_test = truth[test]  # the classes are 0 and 1, encoded as themselves
    assert accuracy_score(true_test, cleaned.predict(prep.X.iloc[test])) > accuracy_score(
        true_test, noisy.predict(prep.X.iloc[test])
    )

    report = label_issues(config)
    assert report["issues"] == len(ranked) and str(path) in report["ranked"][0]["source"]
    first = report["ranked"][0]
    assert first["label"] != first["predicted"] and first["probability_of_label"] < 0.5
