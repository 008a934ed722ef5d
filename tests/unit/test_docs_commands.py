"""Every `trainforge ...` command shown in README.md and docs/*.md parses against the real CLI.

Commands are collected from fenced code blocks (a leading `$ ` prompt dropped, backslash-continued lines joined,
trailing `# comments` dropped) and checked without running anything: the (sub)command exists, every `--option`
is one of that command's options, no argument is left over, and config paths (`*.yaml` / `*.yml`, `examples/...`)
exist in the repository. The synopsis notation of the README's command list is understood: `[...]` marks optional
parts and ` | ` separates alternative subcommands of the same group (`trainforge runs list | show RUN | compare A B`).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from trainforge.cli import app

REPO = Path(__file__).resolve().parents[2]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 250
# Stands for "your config" throughout the docs (`trainforge train run.yaml ...`); not a file in the repository.
PLACEHOLDER_CONFIGS = {"run.yaml"}
FENCE = re.compile(r"^\s*(```|~~~)")
COMMENT = re.compile(r"\s+#.*$")


def fenced_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) for every fenced line starting with `trainforge `."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, fence, i = [], None, 0
    while i < len(lines):
        line, lineno = lines[i], i + 1
        i += 1
        match = FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
            continue
        if fence is None:
            continue
        text = line.strip()
        if text.startswith("$ "):
            text = text[2:].lstrip()
        if not text.startswith("trainforge "):
            continue
        while text.endswith("\\") and i < len(lines):
            text = text[:-1].rstrip() + " " + lines[i].strip()
            i += 1
        text = COMMENT.sub("", text).strip()
        found.append((lineno, text))
    return found


def all_commands():
    params = []
    for path in DOC_FILES:
        rel = path.relative_to(REPO).as_posix()
        for lineno, command in fenced_commands(path):
            params.append(pytest.param(rel, lineno, command, id=f"{rel}:{lineno}: {command}"))
    return params


COMMANDS = all_commands()


def _tokens(command: str) -> list[list[str]]:
    """The command's argument lists after `trainforge`, one per ` | ` alternative, synopsis brackets removed."""
    tokens = shlex.split(command)
    assert tokens[0] == "trainforge"
    segments, current = [], []
    for token in tokens[1:]:
        if token == "|":
            segments.append(current)
            current = []
            continue
        token = token.strip("[]")
        if token and token != "...":
            current.append(token)
    segments.append(current)
    return segments


# typer builds its commands from its own copy of click (typer 0.29: `typer._click`), so the click objects are
# recognised by what they offer, not by isinstance checks against the `click` package.


def _is_group(command) -> bool:
    return hasattr(command, "get_command") and hasattr(command, "list_commands")


def _options(command) -> list:
    return [param for param in command.params if param.param_type_name == "option"]


def _option_names(command) -> set[str]:
    names = {"--help"}
    for param in _options(command):
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names


def _is_option(token: str) -> bool:
    return token.startswith("-") and token != "-" and not re.fullmatch(r"-\d[\d.e+-]*", token)


def _option_takes_value(command, name: str) -> bool:
    for param in _options(command):
        if name in (*param.opts, *param.secondary_opts):
            return not param.is_flag and not param.count
    return False


def _resolve(args: list[str]):
    """Walk the click tree: (command path, leaf command, its parent context, the leaf's own arguments)."""
    command = typer.main.get_command(app)
    path = ["trainforge"]
    ctx = command.context_class(command, info_name="trainforge", resilient_parsing=True)
    args = list(args)
    while _is_group(command):
        # options of the group itself (e.g. `trainforge --trust-pickle predict ...`) come before the subcommand
        while args and _is_option(args[0]):
            token = args.pop(0)
            name = token.split("=", 1)[0]
            assert name in _option_names(command), (
                f"`{' '.join(path)}` has no option {name}; it has {sorted(_option_names(command))}"
            )
            if _option_takes_value(command, name) and "=" not in token and args:
                args.pop(0)
        assert args, f"`{' '.join(path)}` needs a subcommand: {sorted(command.list_commands(ctx))}"
        name = args.pop(0)
        sub = command.get_command(ctx, name)
        assert sub is not None, (
            f"`{' '.join(path)}` has no command {name!r}; it has {sorted(command.list_commands(ctx))}"
        )
        path.append(name)
        parent, command = ctx, sub
        ctx = command.context_class(command, info_name=name, parent=parent, resilient_parsing=True)
    return path, command, ctx.parent, args


def _looks_like_config_path(value: str) -> bool:
    return value.endswith((".yaml", ".yml")) or value.startswith("examples/")


def _check_paths(args: list[str]) -> None:
    for token in args:
        value = token.split("=", 1)[1] if "=" in token else token
        if not _looks_like_config_path(value):
            continue
        if any(c in value for c in "<>*$") or value.startswith("runs/") or value in PLACEHOLDER_CONFIGS:
            continue
        assert (REPO / value).exists(), f"{value} does not exist in the repository"


def check_command(command_text: str) -> None:
    segments = _tokens(command_text)
    group_path: list[str] | None = None
    for index, args in enumerate(segments):
        if index:  # an alternative: another subcommand of the first alternative's group
            args = group_path + args
        path, command, parent, own_args = _resolve(args)
        if not index:
            group_path = path[1:-1]
        options = _option_names(command)
        for token in own_args:
            if _is_option(token):
                name = token.split("=", 1)[0]
                assert name in options, f"`{' '.join(path)}` has no option {name}; it has {sorted(options)}"
        # click itself parses the rest. With resilient parsing a missing required argument is no error, and (click
        # 8.x as typer ships it) neither is an unknown option, hence the check above; arguments left over are errors.
        try:
            ctx = command.make_context(path[-1], list(own_args), parent=parent, resilient_parsing=True)
        except Exception as error:  # click's UsageError (typer's copy): unknown option, missing option value ...
            if not hasattr(error, "format_message"):
                raise
            pytest.fail(f"`{' '.join(path)} {' '.join(own_args)}` does not parse: {error.format_message()}")
        assert not ctx.args or ctx.allow_extra_args, f"`{' '.join(path)}` got unexpected extra arguments {ctx.args}"
        _check_paths(own_args)


@pytest.mark.parametrize(("doc", "line", "command"), COMMANDS)
def test_documented_command_parses(doc, line, command):
    check_command(command)


def test_the_docs_show_commands():
    # guards the collector: the README's command list alone has more than 20
    assert len(COMMANDS) >= 40, [c.values for c in COMMANDS]


def test_the_checker_rejects_what_the_cli_rejects():
    check_command("trainforge runs list | show RUN | compare A B")
    check_command("trainforge export RUN --format onnx [--quantize int8]")
    for bad in (
        "trainforge trian examples/lora-sft.yaml",  # no such command
        "trainforge train examples/lora-sft.yaml --resumee",  # no such option
        "trainforge runs list | shwo RUN",  # no such alternative
        "trainforge serve RUN --nproc 2",  # an option of another command
        "trainforge export RUN EXTRA",  # an argument too many
        "trainforge train examples/no-such-example.yaml",
    ):  # a config that is not there
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            check_command(bad)


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; details belong in docs/"


def test_the_config_reference_is_the_schema():
    """docs/config.md lists every key of the schema with its type, default and description, as generated."""
    from trainforge.config.reference import markdown

    page = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert markdown() in page, (
        "docs/config.md is out of date: run `python -m trainforge.config.reference docs/config.md`"
    )
    assert "`training.learning_rate`" in page and "`method.lora.r`" in page
