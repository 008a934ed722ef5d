"""Model cards and Ollama Modelfiles: `export` writes a README.md with the Hub's metadata, the run's data (rows and
fingerprints), its before/after scores and loading code that runs, into the adapter, merged and GGUF folders; the
GGUF folder's Modelfile renders conversations as the tokenizer's chat template does."""

import ast
import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import tiny_run_config

SYSTEM = "You add numbers."


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 1-step LoRA run on chats that share one system prompt (template chatml, not the bundled GGUF's), its
    adapter card as training left it, then `export --merge --format gguf`."""
    from trainforge.cli import app
    from trainforge.pipeline import train

    root = tmp_path_factory.mktemp("card")
    data = root / "sums.jsonl"
    rows = [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": str(2 * i)},
            ]
        }
        for i in range(24)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tiny_run_config(
        root / "runs",
        name="sums",
        data={"task": None, "path": str(data), "format": "chat", "template": "chatml"},
        training={"max_steps": 1},
        evaluation={"generation": False},
    )
    run = train(config)
    trained_card = (run.path / "adapter" / "README.md").read_text()
    result = CliRunner().invoke(app, ["export", str(run.path), "--merge", "--format", "gguf"])
    assert result.exit_code == 0, result.output
    return run, trained_card, result.output


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def python_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, re.S)


def strings_in(code: str) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_training_leaves_a_short_card_instead_of_peft_template(exported):
    _, trained_card, _ = exported
    meta = front_matter(trained_card)
    assert meta["base_model"] == "tiny-llama" and meta["library_name"] == "peft"
    assert {"trainforge", "lora", "base_model:adapter:tiny-llama"} <= set(meta["tags"])
    assert "More Information Needed" not in trained_card and "trainforge export RUN" in trained_card


def test_adapter_and_merged_cards_describe_the_run(exported):
    from trainforge.run.finish import fmt

    run, _, output = exported
    summary = json.loads(run.file("summary.json").read_text())
    data = run.info()["data"]
    for folder, library, relation in (("adapter", "peft", "adapter"), ("merged", "transformers", "finetune")):
        card = (run.path / folder / "README.md").read_text()
        assert f"model card written to {run.path / folder / 'README.md'}" in output.replace("\n", "")
        meta = front_matter(card)
        assert meta["base_model"] == "tiny-llama" and meta["library_name"] == library
        assert meta["base_model_relation"] == relation and meta["pipeline_tag"] == "text-generation"
        assert {"trainforge", "lora", "sft"} <= set(meta["tags"])
        for part, fingerprint in data["fingerprints"].items():
            assert f"| {part} | {data['rows'][part]} | `{fingerprint}` |" in card
        row = f"| perplexity | {fmt(summary['before.perplexity'])} | {fmt(summary['after.perplexity'])} |"
        assert row in card
        assert "r 4, alpha 8.0" in card and "## Intended use and limitations" in card
        config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", card, re.S).group(1))
        assert config["method"]["lora"]["r"] == 4 and "ia3" not in config["method"] and "tracking" not in config


def test_adapter_card_code_loads_the_adapter(exported):
    """The peft snippets name the adapter folder; the one for a local copy of the base runs as written, the base's
    Hub id replaced by its local folder."""
    from trainforge.models import resolve_model

    run, _, _ = exported
    folder = str(run.path / "adapter")
    hub, local, use = python_blocks((run.path / "adapter" / "README.md").read_text())
    assert folder in strings_in(hub) and "AutoPeftModelForCausalLM" in hub
    assert {folder, "tiny-llama"} <= strings_in(local)
    code = local.replace("'tiny-llama'", repr(str(resolve_model("tiny-llama")))) + use.replace("128", "2")
    scope: dict = {}
    exec(compile(code, "card", "exec"), scope)  # noqa: S102 - the card's own code, the point of the test
    assert type(scope["model"]).__name__ == "PeftModelForCausalLM" and scope["output"].shape[1] > 0


def test_merged_card_code_loads_the_merged_model(exported):
    run, _, _ = exported
    (code,) = python_blocks((run.path / "merged" / "README.md").read_text())
    assert str(run.path / "merged") in strings_in(code)
    scope: dict = {}
    exec(compile(code.replace("128", "2"), "card", "exec"), scope)  # noqa: S102
    assert type(scope["model"]).__name__ == "LlamaForCausalLM"


def render_go(template: str, messages: list[dict], system: str | None) -> str:
    """An Ollama TEMPLATE of trainforge's shape rendered by hand: Ollama puts the Modelfile's SYSTEM first when the
    conversation has no system message, then the range over `.Messages` (a plain turn or an if-chain on the role)."""
    if system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}, *messages]
    head, rest = template.split("{{ range .Messages }}", 1)
    body, tail = rest.rsplit("{{ end }}", 1)

    def turn(role: str) -> str:
        if not body.startswith("{{ if "):
            return body
        chain, default = body[len("{{ if ") : -len("{{ end }}")].split("{{ else }}")
        for branch in chain.split("{{ else if "):
            condition, text = branch.split(" }}", 1)
            if condition == f'eq .Role "{role}"':
                return text
        return default

    text = "".join(
        turn(m["role"]).replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"]) for m in messages
    )
    return head + text + tail


def modelfile_parts(text: str) -> tuple[str | None, str | None, list[str]]:
    """(TEMPLATE, SYSTEM, stop tokens) of a Modelfile."""
    template = re.search(r'^TEMPLATE """(.*?)"""', text, re.S | re.M)
    system = re.search(r'^SYSTEM """(.*?)"""', text, re.S | re.M)
    stops = [json.loads(s) for s in re.findall(r"^PARAMETER stop (.*)$", text, re.M)]
    return template and template.group(1), system and system.group(1), stops


CONVERSATION = [
    {"role": "user", "content": "What is 2 plus 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3 plus 3?"},
]


def test_gguf_export_has_a_modelfile_and_card(exported):
    import gguf

    from trainforge.inference import load_run_model

    run, _, output = exported
    folder = run.path / "export-gguf-f16"
    text = (folder / "Modelfile").read_text()
    assert "FROM ./model.gguf" in text.splitlines()
    template, system, stops = modelfile_parts(text)
    assert system == SYSTEM  # every training conversation had it
    assert stops == ["<|im_end|>"]
    _, tokenizer = load_run_model(run)
    for messages in (CONVERSATION, [{"role": "system", "content": "Be brief."}, *CONVERSATION]):
        expected = tokenizer.apply_chat_template(
            messages if messages[0]["role"] == "system" else [{"role": "system", "content": SYSTEM}, *messages],
            tokenize=False,
            add_generation_prompt=True,
        )
        assert render_go(template, messages, system) == expected
    reader = gguf.GGUFReader(folder / "model.gguf")
    assert reader.fields["tokenizer.chat_template"].contents() == tokenizer.chat_template  # the run's, not SmolLM2's
    card = (folder / "README.md").read_text()
    assert {"gguf", "f16", "trainforge"} <= set(front_matter(card)["tags"])
    assert "llama-cli -m" in card and "ollama create sums -f Modelfile" in card
    assert str(folder / "model.gguf") in strings_in(python_blocks(card)[0])
    assert "Modelfile beside it" in output.replace("\n", " ")


@pytest.mark.parametrize("name", ["auto", "chatml", "alpaca", "llama3", "none"])
def test_modelfile_template_renders_as_the_tokenizer(name, tmp_path):
    """SmolLM2's own template (which adds a default system prompt) and trainforge's: the converted TEMPLATE, with
    the SYSTEM it comes with, gives the tokenizer's text for a conversation with and without a system message."""
    from trainforge.data.templates import use_template
    from trainforge.export.ollama import write_modelfile
    from trainforge.models import load_tokenizer

    tokenizer = use_template(load_tokenizer("tiny-llama"), name)
    write_modelfile(tmp_path, "model.gguf", tokenizer, tiny_run_config(tmp_path))
    template, system, stops = modelfile_parts((tmp_path / "Modelfile").read_text())
    assert template is not None and tokenizer.eos_token in stops
    if name == "auto":
        assert system.startswith("You are a helpful AI assistant named SmolLM")
    for messages in (CONVERSATION, [{"role": "system", "content": "Be brief."}, *CONVERSATION]):
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert render_go(template, messages, system) == expected


def test_a_template_it_cannot_convert_is_said_not_dropped(tmp_path, capsys):
    from trainforge.export.ollama import write_modelfile
    from trainforge.models import load_tokenizer

    tokenizer = load_tokenizer("tiny-llama")
    tokenizer.chat_template = (
        "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    )
    write_modelfile(tmp_path, "model.gguf", tokenizer, tiny_run_config(tmp_path))
    text = (tmp_path / "Modelfile").read_text()
    assert "TEMPLATE" not in text.replace("# No TEMPLATE", "") and "# No TEMPLATE: " in text
    assert modelfile_parts(text)[2] == [tokenizer.eos_token]
    assert "Modelfile has no TEMPLATE" in " ".join(capsys.readouterr().err.split())  # rich wraps lines
