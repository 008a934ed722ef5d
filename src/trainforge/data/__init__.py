from trainforge.data.readers import read_rows
from trainforge.data.splits import Splits, load_splits

__all__ = ["Splits", "load_splits", "read_rows"]
