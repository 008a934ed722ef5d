"""Task gan: a generator and a discriminator MLP trained against each other on numeric rows."""

from pathlib import Path

GENERATOR_DIR = "generator"


def is_gan(run) -> bool:
    """Whether a run directory holds a trained generator (cheap: no torch import)."""
    return (Path(run.path) / GENERATOR_DIR / "config.json").is_file()
