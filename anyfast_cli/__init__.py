"""anyfast: a Unix-style command-line client for the AnyFast chat-completions gateway."""

__version__ = "0.1.0"
