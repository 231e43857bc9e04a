"""Log a recurring problem at most once per interval, with a count, instead of once per occurrence.

A kernel controls what arrives on its sockets: thousands of garbage frames a second must not become
thousands of tracebacks in the server's log.
"""

from __future__ import annotations

import logging
import time

INTERVAL = 10.0


class Throttled:
    """One warning per ``interval`` for a problem of one source (e.g. one session's kernel)."""

    def __init__(self, logger: logging.Logger, what: str, *, interval: float = INTERVAL) -> None:
        self.logger = logger
        self.what = what
        self.interval = interval
        self._left_out = 0
        self._last: float | None = None

    def report(self, error: BaseException) -> None:
        """Count ``error``; log it (with its traceback) unless one was logged less than ``interval`` ago."""
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            self._left_out += 1
            return
        left_out, self._left_out, self._last = self._left_out, 0, now
        summary = f"{type(error).__name__}: {str(error)[:200]}"
        if left_out:
            self.logger.warning("%s: %s (and %d more since the last report; at most one report per %.0f s)",
                                self.what, summary, left_out, self.interval, exc_info=error)  # fmt: skip
        else:
            self.logger.warning("%s: %s", self.what, summary, exc_info=error)

    def flush(self) -> None:
        """Log how many occurrences were left out since the last report, if any."""
        if self._left_out:
            self.logger.warning("%s: %d more since the last report", self.what, self._left_out)
            self._left_out = 0
