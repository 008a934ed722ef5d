"""Reasoning in answers (`reasoning_content`, or <think> blocks in the content) under `data.thinking`: keep trains
on it, drop strips it, mask keeps it in context but out of the loss; an empty block never trains. On ChatML and on
a ChatML-with-thinking template whose generation prompt opens the block (DeepSeek-R1 style)."""

import pytest

from conftest import tiny_run_config
from trainforge.data.formats import normalize_rows
from trainforge.data.templates import TEMPLATES
from trainforge.data.tokenize import IGNORE, Masking, tokenize_chat
from trainforge.errors import ConfigError, DataError
from trainforge.models import load_tokenizer

THINKING_CHATML = TEMPLATES["chatml"].replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n'")


def chat(*answers, reasoning=None):
    """A conversation whose assistant turns are `answers`; the last one carries `reasoning_content` if given."""
    messages = []
    for i, answer in enumerate(answers):
        messages += [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": answer}]
    if reasoning is not None:
        messages[-1]["reasoning_content"] = reasoning
    return normalize_rows([(3, {"messages": messages})], "chat", "think.jsonl")[0]["messages"]


@pytest.fixture(scope="module")
def tokenizers():
    plain, thinking = load_tokenizer("tiny-llama"), load_tokenizer("tiny-llama")
    plain.chat_template, thinking.chat_template = TEMPLATES["chatml"], THINKING_CHATML
    return {"chatml": plain, "thinking": thinking}


def trained(tokenizer, messages, thinking) -> tuple[str, str]:
    """(the whole tokenized text, the text of its trained tokens), checking labels token by token."""
    row = tokenize_chat(tokenizer, messages, 512, masking=Masking(thinking=thinking))
    kept = [token for token, label in zip(row["input_ids"], row["labels"]) if label != IGNORE]
    assert all(label in (IGNORE, token) for token, label in zip(row["input_ids"], row["labels"]))
    return tokenizer.decode(row["input_ids"]), tokenizer.decode(kept)


def test_reasoning_content_becomes_a_think_block():
    messages = chat("Paris.", reasoning="\nThe capital is Paris.\n")
    assert messages[-1]["content"] == "<think>\nThe capital is Paris.\n</think>\n\nParis."


@pytest.mark.parametrize(
    "template, thinking, answer",
    [
        ("chatml", "keep", "<think>\nIt is 4.\n</think>\n\nFour.<|im_end|>\n"),
        ("chatml", "mask", "Four.<|im_end|>\n"),
        ("chatml", "drop", "Four.<|im_end|>\n"),
        ("thinking", "keep", "It is 4.\n</think>\n\nFour.<|im_end|>\n"),  # the prompt opened the block
        ("thinking", "mask", "Four.<|im_end|>\n"),
    ],
)
def test_thinking_keep_mask_drop(tokenizers, template, thinking, answer):
    text, learned = trained(tokenizers[template], chat("Four.", reasoning="It is 4."), thinking)
    assert learned == answer
    assert ("It is 4." in text) is (thinking != "drop")  # mask keeps it in context, drop strips it


def test_earlier_answers_reasoning_is_masked_in_every_turn(tokenizers):
    messages = chat("<think>Add them.</think> Four.", "<think>\nDouble it.\n</think>\n\nEight.")
    text, learned = trained(tokenizers["chatml"], messages, "mask")
    assert learned == " Four.<|im_end|>\nEight.<|im_end|>\n"  # the space after the block starts the word's token
    assert "Add them." in text and "Double it." in text


@pytest.mark.parametrize("template", ["chatml", "thinking"])
def test_empty_think_blocks_never_train(tokenizers, template):
    text, learned = trained(tokenizers[template], chat("<think>\n\n</think>\n\nFour."), "keep")
    assert learned == "Four.<|im_end|>\n" and "<think>\n\n</think>" in text


def test_a_template_that_rewrites_think_blocks_is_refused(tokenizers):
    rewriting = load_tokenizer("tiny-llama")
    rewriting.chat_template = TEMPLATES["chatml"].replace("message['content']", "message['content'] | upper")
    with pytest.raises(DataError, match=r"rewrites the <think> blocks.*`data.thinking: drop`"):
        trained(rewriting, chat("Four.", reasoning="It is 4."), "mask")


def test_reasoning_twice_is_refused_naming_the_row():
    with pytest.raises(DataError, match=r"think\.jsonl, row 3: message 1 has both `reasoning_content` and a <think>"):
        chat("<think>x</think>Four.", reasoning="It is 4.")


def test_thinking_is_refused_where_no_answer_tokens_are_chosen(tmp_path):
    with pytest.raises(ConfigError, match=r"key `data.thinking` = 'mask'.*objective clm does not"):
        tiny_run_config(tmp_path, data={"thinking": "mask"}, training={"objective": "clm"})
    assert tiny_run_config(tmp_path, data={"thinking": "mask"}).data.thinking == "mask"
