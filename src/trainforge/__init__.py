"""trainforge: config-driven training and fine-tuning, from data to a tracked, exported model."""

import os

# No model hub is reachable on most of our machines and a hub look-up hangs before it fails:
# stay offline unless the user opted in by setting these themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
