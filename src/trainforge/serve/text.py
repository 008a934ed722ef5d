"""Request text both HTTP apps (the server and the dashboard) take: valid Unicode only."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def valid_unicode(text: str) -> str:
    # JSON may escape a lone UTF-16 surrogate ("\ud800"), which no tokenizer can encode and no file can hold
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("Text must be valid Unicode; it holds a lone surrogate (\\ud800-\\udfff)") from None
    return text


Text = Annotated[str, AfterValidator(valid_unicode)]
