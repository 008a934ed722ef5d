import pytest

from trainforge.config import load_config, parse_overrides
from trainforge.config.loader import read_yaml
from trainforge.errors import ConfigError
from trainforge.stages import parse_stages

MINIMAL = {"data": {"task": "dates-json"}}


def _error(data, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(base=data, overrides=overrides)
    return str(info.value)


def test_defaults_fill_every_section():
    config = load_config(base=MINIMAL)
    assert config.method.name == "lora" and config.method.lora.r == 16
    assert config.training.objective == "sft"
    assert config.data.split.train == pytest.approx(0.8)


def test_unknown_key_is_named():
    msg = _error({**MINIMAL, "training": {"learnig_rate": 1e-4}})
    assert "unknown key `training.learnig_rate`" in msg


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("training.learning_rate=-1", "training.learning_rate", "greater than 0"),
        ("method.lora.r=0", "method.lora.r", "greater than 0"),
        ("training.batch_size=abc", "training.batch_size", "integer"),
        ("method.name=magic", "method.name", "unknown method 'magic'"),
        ("training.objective=rl", "training.objective", "'cpo', 'kto', 'ppo', 'grpo' or 'rloo'"),
    ],
)
def test_impossible_values_name_key_value_and_expectation(override, key, expected):
    msg = _error(MINIMAL, [override])
    assert f"`{key}`" in msg and expected in msg
    assert override.split("=", 1)[1] in msg


def test_split_fractions_must_sum_to_one():
    msg = _error({"data": {"task": "dates-json", "split": {"train": 0.7, "validation": 0.2, "test": 0.2}}})
    assert "sum to 1" in msg and "1.1" in msg


def test_exactly_one_data_source():
    assert "exactly one data source" in _error({"data": {"task": "dates-json", "path": "x.jsonl"}})
    assert "missing required key `data`" in _error({})


def test_sft_refuses_raw_text():
    assert "objective `sft` needs instruction data" in _error({"data": {"path": "c.jsonl", "format": "text"}})


def test_overrides_parse_yaml_scalars_and_nest():
    assert parse_overrides(["training.learning_rate=1e-4", "training.packing=true", "name=x"]) == {
        "training": {"learning_rate": 1e-4, "packing": True},
        "name": "x",
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["training.learning_rate"])


def test_yaml_file_errors(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("data:\n  task: dates-json\ndata:\n  task: dates-json\n")
    with pytest.raises(ConfigError, match=r"dup.yaml.*duplicate key `data` at line 3"):
        load_config(dup)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML at line"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(empty)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_every_example_config_validates():
    from pathlib import Path

    examples = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
    assert examples, "examples/ holds one YAML per method"
    for path in examples:
        data = read_yaml(path)
        if "stages" in data:
            parse_stages(data, str(path))
        else:
            load_config(path)


BOMB = """data:
  task: dates
training:
  lr_schedule_extras: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
"""


def test_alias_bomb_is_refused_at_once_in_files_and_overrides(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    with pytest.raises(ConfigError, match=r"bomb.yaml: its aliases .* expand to over 100,000 values"):
        read_yaml(path)
    (tmp_path / "loop.yaml").write_text("data: &a\n  task: *a\n")
    with pytest.raises(ConfigError, match="refers to the node that holds it"):
        read_yaml(tmp_path / "loop.yaml")
    nested = (
        "["
        + ", ".join(
            ["&x0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&x{i} [{', '.join([f'*x{i - 1}'] * 10)}]" for i in range(1, 6)]
        )
        + "]"
    )
    with pytest.raises(ConfigError, match=r"^Override 'training.x=.*expand to over"):
        parse_overrides([f"training.x={nested}"])
    # aliases within bounds are ordinary YAML and still load
    (tmp_path / "ok.yaml").write_text("data: &d\n  task: dates\nstages_data: *d\n")
    assert read_yaml(tmp_path / "ok.yaml")["stages_data"] == {"task": "dates"}


@pytest.mark.parametrize("value", ["inf", "-.inf", ".nan", "1e999"])
def test_every_float_field_is_finite(value):
    with pytest.raises(ConfigError, match="training.learning_rate.*finite number"):
        load_config(base={"data": {"task": "dates"}}, overrides=[f"training.learning_rate={value}"])


def test_error_messages_quote_long_values_shortened():
    with pytest.raises(ConfigError) as err:
        load_config(base={"data": {"task": "dates"}, "training": {"learning_rate": "x" * 50_000}})
    assert "training.learning_rate" in str(err.value) and len(str(err.value)) < 400
