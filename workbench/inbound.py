"""How fast a tenant may send WebSocket frames: a token bucket of bytes per tenant.

Receiving and decoding frames costs the server CPU on its event loop; a tenant sending hundreds of
megabytes a second would take it from everyone.  Past its budget, the reading of that tenant's next frame
waits (Tornado reads a socket's next frame only when the last one was handled), so the excess stays in the
network buffers and the client is slowed down, not refused.  Code and input frames of real clients stay
far below the budget.
"""

from __future__ import annotations

import time

RATE = 8 * 1024 * 1024
"""Bytes per second a tenant may send over all its WebSockets."""
BURST = 16 * 1024 * 1024
"""Bytes a tenant may send at once after a quiet spell."""


class InboundBudget:
    def __init__(self, rate: float = RATE, burst: float = BURST) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def delay(self, tenant: str, nbytes: int) -> float:
        """Seconds to wait before reading more from ``tenant``, which just sent ``nbytes``."""
        now = time.monotonic()
        tokens, last = self._buckets.get(tenant, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate) - nbytes
        if tokens >= self.burst:
            self._buckets.pop(tenant, None)
        else:
            self._buckets[tenant] = (tokens, now)
        return max(0.0, -tokens / self.rate)
