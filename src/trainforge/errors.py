"""The project's own error types: each carries a one-paragraph message for the user, never a traceback; and how
to tell a full disk from other failures, whoever raised it."""

import errno

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# Libraries with native code (tokenizers, safetensors) raise a plain Exception carrying the OS's message.
DISK_FULL_MESSAGES = ("no space left on device", "disk quota exceeded")


class TrainforgeError(Exception):
    """Base of every error the CLI reports as a clean message with a non-zero exit code."""


class ConfigError(TrainforgeError):
    """A config key is unknown, mistyped or holds an impossible value."""


class DataError(TrainforgeError):
    """A data file is missing, unreadable, or a row does not match the expected format."""


class ModelError(TrainforgeError):
    """A model alias or path cannot be resolved or loaded."""


class RunError(TrainforgeError):
    """A run directory is missing, incomplete, or would be overwritten."""


def is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
        return True
    return isinstance(err, Exception) and any(m in str(err).lower() for m in DISK_FULL_MESSAGES)
