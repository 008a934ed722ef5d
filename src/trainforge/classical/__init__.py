"""The classical (tabular) engine: estimators with default search spaces, preprocessing, splits and CV, metrics,
plots and the run flow. Entry points: `run.train_classical`, `predict.predict_file`, `predict.evaluate_file`."""
