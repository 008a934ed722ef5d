"""What the audit and cleaning both judge rows by: a row's text, its exact key, its near neighbours (MinHash
signatures of word shingles in datasketch's LSH index, which finds candidate pairs without comparing every pair; a
candidate counts when its estimated Jaccard similarity reaches the threshold), its language and its token count."""

from __future__ import annotations

import hashlib
import re

NOT_TEXT = {"row", "where", "tools", "role"}  # fields of a normalized example that are not its text
WORD = re.compile(r"\w+")
SHINGLE_WORDS = 3
NUM_PERM = 128  # MinHash permutations: more is a finer similarity estimate, slower
TOKEN_BATCH = 1000  # texts per call of the tokenizer: fast tokenizers encode a batch in parallel
LANGUAGE_CONFIDENCE = 0.9  # below this probability a row's language is `uncertain` (short rows often are)


def row_text(example: dict) -> str:
    """Every string of a normalized example (messages, prompts and answers, text), in order."""
    parts: list[str] = []

    def walk(value) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, dict):
            for key, inner in value.items():
                if key not in NOT_TEXT:
                    walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(example)
    return "\n".join(parts)


def exact_key(text: str) -> str:
    """Rows that differ only in case and whitespace are the same row."""
    return hashlib.sha1(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def _shingles(text: str) -> list[bytes]:
    words = WORD.findall(text.lower())
    if len(words) <= SHINGLE_WORDS:
        return [" ".join(words).encode("utf-8")]
    return list({" ".join(words[i : i + SHINGLE_WORDS]).encode("utf-8") for i in range(len(words) - SHINGLE_WORDS + 1)})


class NearIndex:
    """Rows' MinHash signatures in an LSH index: the rows near a query row."""

    def __init__(self, threshold: float):
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self.hashes: dict[str, object] = {}

    @staticmethod
    def signatures(texts: list[str]) -> list:
        from datasketch import MinHash

        return MinHash.bulk([_shingles(t) for t in texts], num_perm=NUM_PERM)

    def near(self, signature) -> list[str]:
        found = self.lsh.query(signature)
        return [key for key in found if self.hashes[key].jaccard(signature) >= self.threshold]

    def add(self, key: str, signature) -> None:
        self.hashes[key] = signature
        self.lsh.insert(key, signature)


_identifier = None


def detect_language(text: str) -> str:
    """The ISO 639-1 code of the text's language (py3langid: its model ships with the package), or `uncertain`."""
    global _identifier
    if _identifier is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    language, probability = _identifier.classify(text)
    return language if probability >= LANGUAGE_CONFIDENCE else "uncertain"


def token_counts(tokenizer, texts: list[str]) -> list[int]:
    """Tokens per text, special tokens aside; in batches, which a fast tokenizer encodes in parallel."""
    counts: list[int] = []
    for start in range(0, len(texts), TOKEN_BATCH):
        batch = texts[start : start + TOKEN_BATCH]
        # verbose=False: a row longer than the model's context is a finding here, not a warning
        encoded = tokenizer(batch, add_special_tokens=False, return_attention_mask=False, verbose=False)
        counts += map(len, encoded["input_ids"])
    return counts
