"""A tabular run's model.skops is plain scikit-learn / LightGBM: it loads with skops alone (trainforge cannot even
be imported) and gives the predictions `trainforge predict` gives."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd

from _classical import tabular_config
from trainforge.classical.predict import predict_file
from trainforge.pipeline import train

PLAIN = """
import sys
sys.modules["trainforge"] = None  # any import of trainforge now fails
import json, pandas as pd, skops.io as sio
model_file, columns_file, table, out = sys.argv[1:]
untrusted = sio.get_untrusted_types(file=model_file)
model = sio.load(model_file, trusted=untrusted)
columns = json.load(open(columns_file))["model_columns"]
frame = pd.read_csv(table)
for name in ("signup",):  # a date column goes in as its parts, as columns.json lists them
    when = pd.to_datetime(frame.pop(name))
    parts = {"year": when.dt.year, "month": when.dt.month, "day": when.dt.day, "weekday": when.dt.weekday,
             "days": (when - pd.Timestamp("1970-01-01")).dt.days}
    for part, values in parts.items():
        frame[f"{name}_{part}"] = values.astype(float)
frame = frame[list(columns)].astype({c: str for c, kind in columns.items() if kind == "string"})
json.dump({"untrusted": untrusted, "proba": model.predict_proba(frame).tolist()}, open(out, "w"))
"""


def test_model_skops_loads_and_predicts_without_trainforge(tmp_path, runs_dir):
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "plan": rng.choice(["basic", "pro", "team"], n),
            "signup": pd.date_range("2020-01-01", periods=n, freq="3D").strftime("%Y-%m-%d"),
        }
    )
    frame["churn"] = ((frame["age"] > 50) ^ (frame["plan"] == "pro")).map({True: "yes", False: "no"})
    frame.to_csv(tmp_path / "customers.csv", index=False)
    config = tabular_config(
        runs_dir,
        model={"name": "lightgbm", "params": {"n_estimators": 20}},
        data={"path": str(tmp_path / "customers.csv"), "target": "churn", "dataset": None},
        cv={"strategy": "none"},
    )
    run = train(config)
    assert run.status == "completed" and run.file("columns.json").is_file()
    new = frame.drop(columns="churn").iloc[:40]
    new.to_csv(tmp_path / "new.csv", index=False)
    ours = pd.read_csv(predict_file(run, str(tmp_path / "new.csv"), str(tmp_path / "ours.csv")))

    script = tmp_path / "plain.py"
    script.write_text(PLAIN)
    out = tmp_path / "plain.json"
    args = [run.file("model.skops"), run.file("columns.json"), tmp_path / "new.csv", out]
    subprocess.run([sys.executable, str(script), *map(str, args)], check=True, timeout=120)
    plain = json.loads(out.read_text())
    assert not [t for t in plain["untrusted"] if "trainforge" in t]
    assert np.allclose(plain["proba"], ours[["proba_no", "proba_yes"]].to_numpy(), atol=1e-12)
