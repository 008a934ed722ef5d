"""Templates and loss masks under control: a model without a chat template is refused in one paragraph naming
the choices, data.template picks one (saved with the run), train_on_inputs / mask_history change what trains, the
end-of-turn token is trained and generation stops on it."""

import json
import shutil

import pytest

from conftest import tiny_run_config
from trainforge.data.report import DataReport
from trainforge.data.templates import TEMPLATES, use_template
from trainforge.data.tokenize import IGNORE, Masking, check_end_of_turn, end_of_turn, tokenize_chat
from trainforge.errors import ConfigError
from trainforge.models import load_tokenizer, resolve_model
from trainforge.pipeline import train
from trainforge.tracking.rundir import RunDir, read_json

TWO_TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


@pytest.fixture
def tokenizer():
    return load_tokenizer("tiny-llama")


def trained(tokenizer, masking=Masking(), messages=TWO_TURNS):
    row = tokenize_chat(tokenizer, messages, 512, masking=masking)
    return tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE]), row


def test_masks(tokenizer):
    answers, _ = trained(tokenizer)
    assert "Hello" in answers and "4" in answers and "Hi" not in answers
    last, _ = trained(tokenizer, Masking(mask_history=True))
    assert "4" in last and "Hello" not in last
    _, everything = trained(tokenizer, Masking(train_on_inputs=True))
    assert everything["labels"] == everything["input_ids"]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_each_built_in_template_renders_and_locates_the_answers(tokenizer, name):
    use_template(tokenizer, name)
    answers, _ = trained(tokenizer)
    assert "Hello" in answers and "4" in answers and "2+2?" not in answers


def test_the_end_of_turn_token_is_trained_and_becomes_the_eos(tokenizer):
    report = DataReport()
    row, found = tokenize_chat(tokenizer, TWO_TURNS, 512), end_of_turn(tokenizer)
    assert found[0] in row["labels"]
    check_end_of_turn(tokenizer, found, 1.0, report)
    assert report.notes == [
        "end of turn `<|im_end|>` is trained in 100% of the training rows; the tokenizer's eos: generation stops on it"
    ]
    tokenizer.eos_token = "<|endoftext|>"  # a tokenizer whose eos is not the template's end of turn
    report = DataReport()
    check_end_of_turn(tokenizer, end_of_turn(tokenizer), 1.0, report)
    assert tokenizer.eos_token == "<|im_end|>" and "now the tokenizer's eos (was '<|endoftext|>')" in report.notes[0]
    use_template(tokenizer, "llama3")  # its <|eot_id|> is no token of this vocabulary
    assert end_of_turn(tokenizer) is None


@pytest.fixture
def base_model(tmp_path):
    """tiny-llama without a chat template, as a base model's folder would be."""
    folder = tmp_path / "base-llama"
    shutil.copytree(resolve_model("tiny-llama"), folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return folder


def test_a_base_model_is_refused_in_one_paragraph_then_trains_with_a_template(base_model, runs_dir):
    config = tiny_run_config(
        runs_dir,
        name="base",
        model={"name": str(base_model)},
        training={"max_steps": 2},
        evaluation={"before_after": False},
    )
    with pytest.raises(ConfigError, match=r"has no chat template .* Set `data.template` to chatml, alpaca or llama3"):
        train(config)
    assert not (runs_dir / "base").exists()
    run = train(config.model_copy(update={"data": config.data.model_copy(update={"template": "none"})}))
    assert read_json(run.file("summary.json"))["steps"] == 2
    from trainforge.inference import load_run_model

    _, saved = load_run_model(RunDir(run.path))  # chat / predict / serve render as training did
    assert saved.chat_template == TEMPLATES["none"]


def test_a_huge_row_is_cut_before_tokenizing_and_keeps_the_same_tokens(monkeypatch):
    from trainforge.data import tokenize
    from trainforge.data.tokenize import tokenize_chats, trained_spans

    tokenizer = load_tokenizer("tiny-llama")
    contents = ["a short question", "word " * 5000, " " * 20_000 + "x", "=" * 30_000, "é" * 8000]
    rendered = [
        trained_spans(tokenizer, [{"role": "user", "content": c}, {"role": "assistant", "content": "answer"}])
        for c in contents
    ]
    seen = []
    monkeypatch.setattr(tokenize, "CHARS_PER_TOKEN_BOUND", 10**12)
    exact = tokenize_chats(tokenizer, rendered, 64)
    monkeypatch.undo()

    def counting(texts, **kwargs):  # the tokenizer, noting the length of each text it is given
        seen.extend(map(len, texts if isinstance(texts, list) else [texts]))
        return tokenizer(texts, **kwargs)

    assert tokenize_chats(counting, rendered, 64) == exact  # the kept tokens, labels and `truncated` are unchanged
    assert max(seen[: len(contents)]) <= 64 * tokenize.CHARS_PER_TOKEN_BOUND  # the batch saw cut texts
    assert [row["truncated"] for row in exact] == [False, True, True, True, True]


def test_huge_masked_lm_rows_and_segments_are_cut_before_tokenizing_too(monkeypatch):
    from trainforge.data import tokenize
    from trainforge.data.tokenize import mlm_row, tokenize_segments

    texts = ["a short text", "word " * 5000, "=" * 30_000]
    segments = [[{"text": t, "train": False}, {"text": "the answer", "train": True}] for t in texts]

    def prepared():
        bert, llama = load_tokenizer("tiny-bert"), load_tokenizer("tiny-llama")
        return [mlm_row(bert, t, 64, 0.15, None) for t in texts], [tokenize_segments(llama, s, 64) for s in segments]

    monkeypatch.setattr(tokenize, "CHARS_PER_TOKEN_BOUND", 10**12)
    exact = prepared()
    monkeypatch.undo()
    assert prepared() == exact
    assert [row["truncated"] for row in exact[0]] == [row["truncated"] for row in exact[1]] == [False, True, True]
