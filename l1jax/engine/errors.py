"""The one user-error type: its message is one line naming what is wrong and what is allowed."""


class ConfigError(ValueError):
    """A user or environment error (config, paths, files); the CLI prints it and exits 2."""
