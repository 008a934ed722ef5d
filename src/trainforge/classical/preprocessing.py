"""Column kinds (numeric / categorical / date), detected and overridable, and the one fitted pipeline that turns a
raw table into model inputs: column checks → impute → scale / encode → estimator. It is saved with the model, so
prediction applies exactly the steps training did."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from trainforge.config.schema import PreprocessingConfig
from trainforge.errors import DataError

NUMERIC, CATEGORICAL, DATE = "numeric", "categorical", "date"
_LOOKS_NUMERIC = 0.9  # an object column this share of numbers is a numeric column with stray values


def _numbers(values: pd.Series) -> pd.Series:
    """The values as floats, NaN where one is not a number; pandas raises OverflowError for an integer beyond float
    range (e.g. a 400-digit JSON number) instead of coercing it, so those go one by one."""
    try:
        return pd.to_numeric(values, errors="coerce")
    except OverflowError:
        return pd.Series([_number(v) for v in values], index=values.index, dtype=float)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return float("nan")


def _row(frame: pd.DataFrame, position: int) -> int:
    return int(frame.index[position]) + frame.attrs.get("row_base", 1)


def _parse_dates(values: pd.Series) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pd.to_datetime(values, errors="coerce", format="mixed")


def _looks_like_dates(values: pd.Series) -> bool:
    sample = values.dropna().astype(str).head(200)
    if sample.empty or not sample.str.contains(r"[-/:]", regex=True).all():
        return False
    return _parse_dates(sample).notna().mean() >= 0.95


def detect_kinds(frame: pd.DataFrame, features: list[str], cfg: PreprocessingConfig, source: str) -> dict[str, str]:
    """numeric | categorical | date per feature column; `preprocessing.numeric/categorical/dates` win over detection."""
    forced = {
        **{c: NUMERIC for c in cfg.numeric},
        **{c: CATEGORICAL for c in cfg.categorical},
        **{c: DATE for c in cfg.dates},
    }
    kinds = {}
    for column in features:
        values = frame[column]
        if values.isna().all():
            raise DataError(
                f"{source}, column {column!r} has no values at all (every row is empty); drop it with "
                "`data.drop_columns` or fill it."
            )
        kind = forced.get(column)
        if kind is None:
            if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
                kind = NUMERIC
            elif pd.api.types.is_datetime64_any_dtype(values):
                kind = DATE
            else:
                numbers = _numbers(values)
                present = values.notna()
                share = numbers[present].notna().mean()
                if share == 1:
                    kind = NUMERIC
                elif share >= _LOOKS_NUMERIC:
                    bad = int(np.flatnonzero((numbers.isna() & present).to_numpy())[0])
                    raise DataError(
                        f"{source}, column {column!r} looks numeric ({share:.0%} of its values are numbers) "
                        f"but row {_row(frame, bad)} holds {values.iloc[bad]!r}; fix the value, or list the "
                        "column under `preprocessing.categorical` to treat it as categories."
                    )
                else:
                    kind = DATE if _looks_like_dates(values) else CATEGORICAL
        kinds[column] = kind
    return kinds


def _check_finite(values: pd.Series, column: str, X: pd.DataFrame, source: str) -> None:
    """An infinite number (`inf`, or `1e999` read as one) breaks every scaler and estimator; empty cells are imputed."""
    infinite = np.flatnonzero(np.isinf(values.to_numpy(dtype=float, na_value=np.nan)))
    if len(infinite):
        raise DataError(
            f"{source}, column {column!r} (numeric): row {_row(X, int(infinite[0]))} holds "
            f"{values.iloc[int(infinite[0])]!r}, an infinite number ({len(infinite)} such row(s)); "
            "replace it with a finite value, or leave the cell empty to have it imputed."
        )


class TableColumns(TransformerMixin, BaseEstimator):
    """First pipeline step: selects the training columns in training order, coerces each to its kind and refuses a
    table that does not fit (missing column, text in a numeric column, unparseable date), naming the column."""

    def __init__(self, kinds: dict | None = None, unknown_categories: str = "warn"):
        self.kinds = kinds
        self.unknown_categories = unknown_categories

    def check(self, X: pd.DataFrame, source: str = "The input table") -> pd.DataFrame:
        missing = [c for c in self.kinds if c not in X.columns]
        if missing:
            raise DataError(
                f"{source} lacks the column(s) {', '.join(map(repr, missing))} the model was trained on; "
                f"it needs: {', '.join(self.kinds)}."
            )
        table = X.loc[:, list(self.kinds)]
        for column, kind in self.kinds.items():
            values = table[column]
            if kind == NUMERIC and pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                _check_finite(values, column, X, source)
                continue  # already numbers: nothing to convert
            if kind == DATE and pd.api.types.is_datetime64_any_dtype(values):
                continue
            present = values.notna()
            if kind == NUMERIC:
                converted = values.astype(float) if pd.api.types.is_bool_dtype(values) else _numbers(values)
            elif kind == DATE:
                converted = _parse_dates(values)
            else:
                if values.dtype == object and values[present].map(type).eq(str).all():
                    continue  # text already
                converted = values.astype(str).where(present, np.nan).astype(object)
            if kind != CATEGORICAL:
                bad = np.flatnonzero((converted.isna() & present).to_numpy())
                if len(bad):
                    what = "a number" if kind == NUMERIC else "a date"
                    raise DataError(
                        f"{source}, column {column!r} ({kind}): row {_row(X, int(bad[0]))} holds "
                        f"{values.iloc[int(bad[0])]!r}, not {what}."
                    )
            if kind == NUMERIC:
                _check_finite(converted, column, X, source)
            table[column] = converted
        return table

    def fit(self, X, y=None):
        self.fit_transform(X)
        return self

    def fit_transform(self, X, y=None, **fit_params):
        table = self.check(X)
        self.categories_ = {c: sorted(set(table[c].dropna())) for c, k in self.kinds.items() if k == CATEGORICAL}
        return _with_date_parts(table, self.kinds)

    def transform(self, X):
        table = self.check(X)
        for column, known in self.categories_.items():
            unseen = sorted(set(table[column].dropna()) - set(known))
            if unseen:
                msg = (
                    f"column {column!r} holds categories never seen in training: {unseen[:5]}"
                    f"{' ...' if len(unseen) > 5 else ''}"
                )
                if self.unknown_categories == "error":
                    raise DataError(f"The input table, {msg}; the model cannot place them.")
                warnings.warn(f"{msg}; they are encoded as unknown.", UserWarning, stacklevel=2)
        return _with_date_parts(table, self.kinds)

    def get_feature_names_out(self, input_features=None):
        return np.asarray(model_columns(self.kinds), dtype=object)

    def spec(self) -> dict:
        """What rebuilds this fitted step without pickling it (saved as columns.json beside the model)."""
        return {
            "kinds": self.kinds,
            "unknown_categories": self.unknown_categories,
            "categories": self.categories_,
            "model_columns": {c: _model_kind(c, self.kinds) for c in model_columns(self.kinds)},
        }

    @classmethod
    def from_spec(cls, spec: dict) -> "TableColumns":
        step = cls(spec["kinds"], spec["unknown_categories"])
        step.categories_ = spec["categories"]
        return step


DATE_PARTS = ("year", "month", "day", "weekday", "days")  # days: since 1970-01-01


def model_columns(kinds: dict[str, str]) -> list[str]:
    """The columns the saved scikit-learn pipeline takes: the features, each date as its parts."""
    return [name for c, k in kinds.items() for name in ([f"{c}_{p}" for p in DATE_PARTS] if k == DATE else [c])]


def _model_kind(column: str, kinds: dict[str, str]) -> str:
    kind = kinds.get(column, NUMERIC)  # a date part is a number
    return "string" if kind == CATEGORICAL else "number"


def _with_date_parts(table: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """Each date column as numbers (year, month, day, weekday, days since 1970; NaT → NaN, imputed next). Done here,
    not inside the scikit-learn pipeline, so the saved model holds only scikit-learn types (no trainforge code)."""
    dates = [c for c, k in kinds.items() if k == DATE]
    if not dates:
        return table
    table = table.copy()
    for column in dates:
        values = pd.to_datetime(table[column], errors="coerce")
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_convert(None)
        parts = {
            "year": values.dt.year,
            "month": values.dt.month,
            "day": values.dt.day,
            "weekday": values.dt.weekday,
            "days": (values - pd.Timestamp("1970-01-01")).dt.days,
        }
        for part, numbers in parts.items():
            table[f"{column}_{part}"] = numbers.astype(float)
    return table[model_columns(kinds)]


def _scaler(name: str):
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    return {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}[name]()


def build_pipeline(
    kinds: dict[str, str], frame: pd.DataFrame, cfg: PreprocessingConfig, scale_default: bool, estimator
):
    """raw table → TableColumns → ColumnTransformer(impute, scale, encode, date parts) → estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    scale = cfg.scale if cfg.scale != "auto" else ("standard" if scale_default else "none")
    numeric = [c for c, k in kinds.items() if k == NUMERIC]
    dates = [f"{c}_{p}" for c, k in kinds.items() if k == DATE for p in DATE_PARTS]
    categorical = [c for c, k in kinds.items() if k == CATEGORICAL]
    cardinality = {c: frame[c].nunique(dropna=True) for c in categorical}
    if cfg.encode == "auto":
        onehot = [c for c in categorical if cardinality[c] <= cfg.max_onehot]
    else:
        onehot = categorical if cfg.encode == "onehot" else []
    ordinal = [c for c in categorical if c not in onehot]

    def numbers():
        imputer = (
            SimpleImputer(strategy="constant", fill_value=0)
            if cfg.impute_numeric == "zero"
            else SimpleImputer(strategy=cfg.impute_numeric)
        )
        steps = [("impute", imputer)]
        if scale != "none":
            steps.append(("scale", _scaler(scale)))
        return Pipeline(steps)

    fill = (
        SimpleImputer(strategy="most_frequent")
        if cfg.impute_categorical == "most_frequent"
        else SimpleImputer(strategy="constant", fill_value="missing")
    )
    blocks = []
    if numeric:
        blocks.append(("numeric", numbers(), numeric))
    if dates:
        blocks.append(("dates", numbers(), dates))
    if onehot:
        blocks.append(
            (
                "onehot",
                Pipeline([("impute", fill), ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False))]),
                onehot,
            )
        )
    if ordinal:
        blocks.append(
            (
                "ordinal",
                Pipeline(
                    [("impute", fill), ("encode", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1))]
                ),
                ordinal,
            )
        )
    if not blocks:
        raise DataError("The table has no feature columns left after removing the target and `data.drop_columns`.")
    prepare = ColumnTransformer(blocks, remainder="drop", verbose_feature_names_out=False)
    return Pipeline(
        [("columns", TableColumns(kinds, cfg.unknown_categories)), ("prepare", prepare), ("model", estimator)]
    )
