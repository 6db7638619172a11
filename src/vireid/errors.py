"""Exception types. The CLI turns any :class:`VireidError` into a one-line message and exit code 2."""


class VireidError(Exception):
    """Base class for every error caused by user input (files, configs, checkpoints)."""


class ConfigError(VireidError):
    """A configuration key or value is not valid."""


class DataError(VireidError):
    """A dataset folder, split file or image is missing, malformed or unreadable."""


class CheckpointError(VireidError):
    """A checkpoint, feature file or index does not match what the caller expects."""


class TrainingError(VireidError):
    """Training cannot go on (for example a non-finite loss)."""
