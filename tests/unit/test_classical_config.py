import pytest

from trainforge.config import load_config
from trainforge.errors import ConfigError


def _error(data) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(base=data)
    return str(info.value)


def test_tabular_defaults_fill_in():
    config = load_config(base={"task": "classification", "data": {"dataset": "iris"}})
    assert config.model.name == "random_forest" and config.data.target == "target"
    assert config.data.format == "tabular" and config.cv.folds == 5 and config.tuning.strategy == "bayes"
    assert load_config(base={"task": "clustering", "data": {"dataset": "iris"}}).model.name == "kmeans"


def test_lm_configs_are_unchanged():
    config = load_config(base={"data": {"task": "dates-json"}})
    assert config.task == "lm" and config.model.name == "smollm2-135m-instruct" and config.data.format == "chat"


@pytest.mark.parametrize(
    "data, expected",
    [
        (
            {"task": "classification", "model": {"name": "kmeans"}, "data": {"dataset": "iris"}},
            "`model.name` = 'kmeans' is not an estimator for task classification",
        ),
        ({"task": "regression", "model": {"name": "xgboostt"}, "data": {"dataset": "diabetes"}}, "lightgbm"),
        ({"task": "classification", "data": {"dataset": "titanic"}}, "unknown bundled dataset 'titanic'"),
        ({"task": "regression", "data": {"path": "t.csv"}}, "needs `data.target`"),
        ({"task": "classification", "data": {"dataset": "iris", "format": "chat"}}, "key `data.format` = 'chat'"),
        (
            {"task": "classification", "data": {"dataset": "iris", "split": {"strategy": "group"}}},
            "needs `data.group_column`",
        ),
        (
            {"task": "regression", "data": {"dataset": "diabetes"}, "cv": {"metric": "accuracy"}},
            "`cv.metric` = 'accuracy' is not a regression metric",
        ),
        ({"data": {"dataset": "iris"}}, "for tabular tasks"),
        (
            {
                "task": "classification",
                "data": {"dataset": "iris"},
                "tuning": {"space": {"C": {"type": "float", "low": 1, "high": 0.1}}},
            },
            "`low` < `high`",
        ),
    ],
)
def test_bad_tabular_configs_name_the_key(data, expected):
    assert expected in _error(data)


def test_search_space_shorthand_and_keys():
    from trainforge.tuning.space import grid
    from trainforge.tuning.study import search_space

    config = load_config(
        base={
            "task": "classification",
            "model": {"name": "random_forest"},
            "data": {"dataset": "iris"},
            "tuning": {"space": {"max_depth": [2, 4], "preprocessing.scale": ["none", "standard"]}},
        }
    )
    space = search_space(config)
    assert space["model.params.max_depth"].choices == [2, 4]
    assert space["preprocessing.scale"].type == "categorical"
    assert "model.params.n_estimators" in space  # the estimator's default space stays underneath
    replaced = config.model_copy(deep=True)
    replaced.tuning.replace_space = True
    points = grid(search_space(replaced), 4, seed=0)
    assert len(points) == 4 and {tuple(sorted(p.items())) for p in points} == {
        (("model.params.max_depth", d), ("preprocessing.scale", s)) for d in (2, 4) for s in ("none", "standard")
    }
