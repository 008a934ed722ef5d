"""The project's own error types: each carries a one-paragraph message for the user, never a traceback."""


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
