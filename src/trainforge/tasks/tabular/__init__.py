"""Task tabular: classification, regression and clustering with a classical estimator (task.py) on the tabular
library, trainforge.classical."""
