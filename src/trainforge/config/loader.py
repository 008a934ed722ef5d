"""Load a run config from YAML (or a dict) with `key=value` overrides; turn every problem into a ConfigError."""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trainforge.config.schema import RunConfig
from trainforge.errors import ConfigError

_EXPONENT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`training.learning_rate=1e-4` → {"training": {"learning_rate": 1e-4}}; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"Override {pair!r} is not of the form key=value (e.g. training.learning_rate=1e-4).")
        try:
            value = load_yaml_text(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        except ConfigError as err:
            raise ConfigError(f"Override {_shortened(pair)}: {err}.") from None
        if isinstance(value, str) and _EXPONENT.match(value.strip()):
            value = float(value)  # YAML 1.1 reads `1e-4` (no dot) as a string
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"Override {pair!r} sets a key below `{part}`, which an earlier override set to a value."
                )
            node = child
        node[parts[-1]] = value
    return tree


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# A config is a few hundred nodes; aliases that expand past this are a "billion laughs" bomb, which would hang
# validation and fill the disk when the config is written out expanded.
MAX_YAML_NODES = 100_000


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys instead of silently keeping the last one, and documents whose
    aliases expand past MAX_YAML_NODES or refer to themselves."""

    def construct_document(self, node):
        _expanded_size(node, {}, set())
        return super().construct_document(node)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Nodes in the document once every alias is written out (an alias repeats its anchor's node object)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise ConfigError(f"an alias at line {node.start_mark.line + 1} refers to the node that holds it")
    open_nodes.add(id(node))
    children = node.value if isinstance(node, yaml.SequenceNode) else []
    if isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1
    for child in children:
        size += _expanded_size(child, sizes, open_nodes)
        if size > MAX_YAML_NODES:
            raise ConfigError(
                f"its aliases (`*name`) expand to over {MAX_YAML_NODES:,} values (the node at line "
                f"{node.start_mark.line + 1}); a config needs a few hundred"
            )
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate key `{key}` at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_text(text: str) -> Any:
    """YAML text read as every config, override and principles file is: duplicate keys, alias bombs and nesting
    deeper than Python's recursion refused (ConfigError)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except RecursionError:
        raise ConfigError("its values nest too deeply to be a config") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8-sig"))
    except ConfigError as err:
        raise ConfigError(f"Config file {path}: {err}.") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"Config file {path} is not UTF-8 text ({err.reason} at byte {err.start}).") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"Config file {path} is not valid YAML{at}: {getattr(err, 'problem', err)}.") from None
    if data is None:
        raise ConfigError(f"Config file {path} is empty; it needs at least a `data:` section.")
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file {path} must hold a mapping of sections (model, data, method, ...), got {type(data).__name__}."
        )
    return data


def did_you_mean(key: str) -> str:
    """A hint for an unknown key: the trainforge key LLaMA-Factory's or Axolotl's name stands for, the same name in
    another section, or the closest key."""
    import difflib

    from trainforge.config.migrate import RULES
    from trainforge.config.reference import rows

    known = [name for name, *_ in rows(RunConfig)]
    leaf = key.rsplit(".", 1)[-1]
    same = [name for name in known if name.rsplit(".", 1)[-1] == leaf]
    if same:
        return f" (did you mean `{same[0]}`?)"
    foreign = [(tool, rules[key]) for tool, rules in RULES.items() if isinstance(rules.get(key), str)]
    if foreign:
        tools = {"llamafactory": "LLaMA-Factory", "axolotl": "Axolotl"}
        return f" ({tools[foreign[0][0]]}'s `{key}` is `{foreign[0][1]}` here)"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _shortened(value: Any) -> str:
    """A value as an error message quotes it: long strings and big lists cut, so a message stays a paragraph."""
    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlist, short.maxdict, short.maxlevel = 80, 80, 6, 6, 3
    return short.repr(value)


def describe_validation_error(err: ValidationError, source: str) -> str:
    problems = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key `{key}`{did_you_mean(key)}")
        elif item["type"] == "missing":
            problems.append(f"missing required key `{key}`")
        elif not item["loc"]:  # a check across sections: the message names its keys; the input is the whole config
            problems.append(msg)
        else:
            problems.append(f"key `{key}` = {_shortened(item['input'])}: {msg}")
    return f"Invalid config {source}: " + "; ".join(problems) + "."


def validate(data: dict[str, Any], source: str = "(in memory)") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, source)) from None


def with_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    return merge(data, parse_overrides(overrides)) if overrides else data


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None
) -> RunConfig:
    """The one entry point: YAML file (or `base` dict) + overrides → validated RunConfig."""
    data = with_overrides(read_yaml(path) if path is not None else dict(base or {}), overrides)
    source = str(path) if path is not None else "(in memory)"
    if "stages" in data:
        raise ConfigError(
            f"Config {source} chains `stages:`; run it with `trainforge train`, which runs each stage "
            "in turn (each stage's run directory then works with eval, predict and export)."
        )
    return validate(data, source)


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
