"""The command's usage errors and exit statuses."""

from __future__ import annotations

__all__ = ["EXIT_INPUTS", "EXIT_INTERRUPTED", "EXIT_USAGE", "UsageError"]

EXIT_USAGE, EXIT_INPUTS, EXIT_INTERRUPTED = 2, 3, 130


class UsageError(Exception):
  """A bad command line: printed as one line, exit status 2."""
