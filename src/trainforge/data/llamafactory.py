"""LLaMA-Factory's dataset registry: `data.path: <folder>/dataset_info.json#<name>` reads the entry's file (or Hub
dataset) with the layout its `formatting` / `ranking` / `kto_tag` say and the field names its `columns` and `tags`
give, as LLaMA-Factory would."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from trainforge.data.formats import Naming
from trainforge.data.readers import HUB_PREFIX
from trainforge.errors import DataError

INFO_FILE = "dataset_info.json"
# LLaMA-Factory's column names → trainforge's field names, per layout
ALPACA_COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "system": "system",
    "history": "history",
}
CHAT_COLUMNS = {"messages": "conversations", "system": "system", "tools": "tools"}
PAIR_COLUMNS = {"chosen": "chosen", "rejected": "rejected", "kto_tag": "kto_tag"}
# LLaMA-Factory's tags → (trainforge's role, or message key)
ROLE_TAGS = {"user_tag": "user", "assistant_tag": "assistant", "system_tag": "system", "observation_tag": "tool"}
SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "system_tag": "system",
    "observation_tag": "observation",
    "function_tag": "function_call",
}
OPENAI_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
    "observation_tag": "tool",
    "function_tag": "function_call",
}
USED_KEYS = {"file_name", "hf_hub_url", "formatting", "ranking", "columns", "tags", "subset", "split"}


@dataclass
class Entry:
    path: str  # the file (or folder, or hf: id) the entry names
    layout: str
    names: Naming
    notes: list[str] = field(default_factory=list)  # entry keys trainforge does not use


def is_entry(spec: str) -> bool:
    return "#" in spec and spec.split("#", 1)[0].endswith(INFO_FILE)


def resolve(spec: str) -> Entry:
    """The file, layout and field names of `<folder>/dataset_info.json#<name>`."""
    info_path, name = spec.split("#", 1)
    info_file = Path(info_path)
    try:
        registry = json.loads(info_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(
            f"Data path {spec}: {info_file} cannot be read as LLaMA-Factory's dataset_info.json ({err})."
        ) from None
    if name not in registry:
        raise DataError(f"Data path {spec}: {info_file} has no entry {name!r}; entries: {', '.join(sorted(registry))}.")
    entry = registry[name]
    if "file_name" in entry:
        path = str(info_file.parent / entry["file_name"])
    elif "hf_hub_url" in entry:
        path = HUB_PREFIX + entry["hf_hub_url"] + (f":{entry['subset']}" if entry.get("subset") else "")
        path += f"@{entry.get('split', 'train')}"
    else:
        raise DataError(
            f"Data path {spec}: entry {name!r} names no `file_name` or `hf_hub_url` (trainforge reads "
            "those; download other sources first)."
        )
    formatting, columns = entry.get("formatting", "alpaca"), entry.get("columns", {})
    if formatting not in ("alpaca", "sharegpt", "openai"):
        raise DataError(
            f"Data path {spec}: entry {name!r} has formatting {formatting!r}; expected alpaca, sharegpt or openai."
        )
    if "kto_tag" in columns:
        layout = "unpaired"
    elif entry.get("ranking"):
        layout = "preference"
    else:
        layout = "alpaca" if formatting == "alpaca" else "chat"
    ours = ALPACA_COLUMNS if formatting == "alpaca" else {**CHAT_COLUMNS, "messages": "conversations"}
    renamed = {
        ours.get(lf, PAIR_COLUMNS.get(lf)): theirs
        for lf, theirs in columns.items()
        if ours.get(lf, PAIR_COLUMNS.get(lf)) not in (None, theirs)
    }
    if formatting == "openai" and "messages" not in columns:
        renamed["conversations"] = "messages"
    tags = {**(OPENAI_TAGS if formatting == "openai" else SHAREGPT_TAGS), **entry.get("tags", {})}
    keys = {"role": tags["role_tag"], "content": tags["content_tag"]} if formatting != "alpaca" else {}
    keys = {k: v for k, v in keys.items() if v not in ("from", "value", k)}  # trainforge reads these as they are
    roles = {ours_role: [tags[tag]] for tag, ours_role in ROLE_TAGS.items() if tag in tags}
    notes = [
        f"dataset_info.json entry {name!r}: key `{key}` is not used by trainforge"
        for key in sorted(set(entry) - USED_KEYS)
    ]
    notes += [
        f"dataset_info.json entry {name!r}: column `{lf}` is not read"
        for lf in columns
        if lf not in ours and lf not in PAIR_COLUMNS
    ]
    return Entry(path, layout, Naming(renamed, roles if formatting != "alpaca" else {}, keys), notes)
