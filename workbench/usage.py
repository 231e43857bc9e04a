"""How many bytes a workspace uses, for the upload quota, without a whole-tree walk per upload.

The quota check needs the workspace's usage when an upload starts.  Walking the tree each time costs
seconds when the kernel made 300,000 files.  :class:`CachedUsage` walks a workspace at most once per
``refresh`` seconds (on the caller's thread, never the event loop) and, in between, adds what uploads
committed.  Files the kernel writes meanwhile are counted at the next walk: the quota on uploads is a
soft bound, the hard one is the file system's.

This is the one seam for usage: an object with ``usage(workspace)`` and ``charge(workspace, nbytes)``
(see :class:`workbench.workspace.UsageMeter`); a workspace on a file system of its own can answer
``usage`` from ``statvfs`` instead.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from workbench.workspace import Workspace

REFRESH_SECONDS = 30.0


class CachedUsage:
    def __init__(self, refresh: float = REFRESH_SECONDS) -> None:
        self.refresh = refresh
        self._figures: dict[Path, tuple[float, int]] = {}
        self._locks: dict[Path, threading.Lock] = {}
        self._guard = threading.Lock()

    def usage(self, workspace: Workspace) -> int:
        with self._guard:
            lock = self._locks.setdefault(workspace.root, threading.Lock())
        with lock:  # one walk per workspace at a time; the others wait for its figure
            figure = self._figures.get(workspace.root)
            if figure is not None and time.monotonic() - figure[0] < self.refresh:
                return figure[1]
            total = workspace.usage_bytes()
            with self._guard:
                self._figures[workspace.root] = (time.monotonic(), total)
            return total

    def charge(self, workspace: Workspace, nbytes: int) -> None:
        """An upload of ``nbytes`` was committed."""
        with self._guard:
            figure = self._figures.get(workspace.root)
            if figure is not None:
                self._figures[workspace.root] = (figure[0], figure[1] + nbytes)

    def forget(self, root: Path) -> None:
        """The workspace is gone."""
        with self._guard:
            self._figures.pop(root, None)
            self._locks.pop(root, None)
