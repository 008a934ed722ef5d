"""`model.name: scratch`: a byte-level BPE tokenizer trained on the run's own corpus and a randomly initialised
causal LM (transformers' LlamaConfig) sized by `model.architecture`. Saved like any model, so it fine-tunes,
serves and exports as one."""

from __future__ import annotations

from trainforge.config.schema import ScratchArchitecture, ScratchTokenizer

# ChatML, as SmolLM2 uses: every turn is `<|im_start|>role\n...<|im_end|>\n`, so a conversation's prefix renders
# as the start of the whole (assistant-only SFT loss relies on it) and generation stops at <|im_end|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus_texts(rows: list[dict]) -> list[str]:
    """The strings a tokenizer learns from: text rows' text, chat rows' message contents."""
    texts = []
    for row in rows:
        if "text" in row:
            texts.append(row["text"])
        texts.extend(m["content"] for m in row.get("messages", []))
    return texts


def train_tokenizer(options: ScratchTokenizer, texts: list[str]):
    """A byte-level BPE tokenizer (every string encodes, no unknown token) as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=options.vocab_size,
        min_frequency=options.min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(arch: ScratchArchitecture, tokenizer, max_length: int):
    """A randomly initialised LLaMA-style causal LM (seed it before calling)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads,
        num_key_value_heads=arch.kv_heads or arch.heads,
        intermediate_size=arch.intermediate_size or 4 * arch.hidden_size,
        max_position_embeddings=max(arch.max_position_embeddings, max_length),
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
