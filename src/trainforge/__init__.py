"""trainforge: config-driven training and fine-tuning, from data to a tracked, exported model."""

import logging
import os
import warnings

# No model hub is reachable on most of our machines and a hub look-up hangs before it fails:
# stay offline unless the user opted in by setting these themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Start-up noise users cannot act on, printed on every import: CUDA-only torchao extensions and a hub-hosted
# bitsandbytes kernel that a CPU machine cannot load, and deprecations raised inside the libraries themselves.
_IMPORT_NOISE = {
    "torchao": "Failed to load ",
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward",
    "kernels._internals.hf_hub": "Skipping publisher trust check",  # the same kernel's look-up, offline
    "torch.utils._pytree": "is an Enum subclass and is now natively supported",
}
for _logger_name, _text in _IMPORT_NOISE.items():
    logging.getLogger(_logger_name).addFilter(lambda record, text=_text: text not in record.getMessage())
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

__version__ = "0.1.0"
