"""The classical (tabular) engine: estimators with default search spaces, preprocessing, splits and CV, metrics,
plots, a run's prepared inputs (prepare.py) and batch prediction / evaluation with a saved run (predict.py). The
run flow is the tabular task's (trainforge.tasks.tabular)."""
