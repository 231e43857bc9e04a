"""A bounded outbox per client (WebSocket or NDJSON stream).

A kernel can print faster than a client reads.  The outbox keeps memory bounded: consecutive stream
text is coalesced, output for a client that falls behind is skipped (with a visible notice) rather than
buffered, and the events a client cannot do without (``done``, ``kernel``, ``input_request``, errors,
``expiring``) are always kept; a client so slow that even those pile up is marked ``overflowed`` and the
handler disconnects it.
"""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any

Event = dict[str, Any]

SKIPPABLE = frozenset({"stream", "display_data", "execute_result", "clear_output"})
SKIP_NOTICE = "\n[workbench: {skipped} bytes of output skipped: this client could not keep up]\n"


def event_size(event: Event) -> int:
    if event.get("type") == "stream":
        return len(event.get("text", "")) + 64
    return len(json.dumps(event, ensure_ascii=False))


class Outbox:
    def __init__(self, *, max_bytes: int = 4 * 1024 * 1024, max_chunk: int = 256 * 1024) -> None:
        self.max_bytes = max_bytes
        self.max_chunk = max_chunk
        self.overflowed = False
        self._items: collections.deque[Event] = collections.deque()
        self._bytes = 0
        self._skipped: dict[Any, int] = {}
        self._head_offset = 0
        self._essential_bytes = 0
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def put(self, event: Event) -> None:
        size = event_size(event)
        if event.get("type") in SKIPPABLE:
            key = event.get("id")
            if self._items and self._bytes + size > self.max_bytes:  # one big message alone always fits
                self._skipped[key] = self._skipped.get(key, 0) + size
                return
            self._flush_notice(key)
            if self._coalesce(event, size):
                return
        else:
            self._flush_notice(event.get("id"))
            self._essential_bytes += size
            if self._essential_bytes > 4 * self.max_bytes:
                self.overflowed = True
        self._append(event, size)

    def _coalesce(self, event: Event, size: int) -> bool:
        if event["type"] != "stream" or not self._items:
            return False
        last = self._items[-1]
        same = (
            last.get("type") == "stream"
            and last.get("id") == event.get("id")
            and last["name"] == event["name"]
        )
        if not same or len(last["text"]) + len(event["text"]) > self.max_chunk:
            return False
        self._items[-1] = {**last, "text": last["text"] + event["text"]}
        self._bytes += size - 64
        return True

    def _flush_notice(self, key: Any) -> None:
        skipped = self._skipped.pop(key, 0)
        if skipped:
            notice = {
                "type": "stream",
                "id": key,
                "name": "stderr",
                "text": SKIP_NOTICE.format(skipped=skipped),
            }
            self._append(notice, event_size(notice))

    def _append(self, event: Event, size: int) -> None:
        self._items.append(event)
        self._bytes += size
        self._ready.set()

    def snapshot(self) -> list[Event]:
        """What is queued (for replay), without taking it out."""
        if not self._head_offset:
            return list(self._items)
        head = self._items[0]
        return [{**head, "text": head["text"][self._head_offset :]}, *list(self._items)[1:]]

    def _pop(self) -> Event:
        """The next event; a huge stream message comes out in pieces of ``max_chunk`` characters, sliced
        as they are sent, so it is held once (shared by every client) and never copied whole."""
        head = self._items[0]
        if head.get("type") == "stream" and len(head["text"]) - self._head_offset > self.max_chunk:
            piece = head["text"][self._head_offset : self._head_offset + self.max_chunk]
            self._head_offset += len(piece)
            self._bytes -= len(piece)
            return {**head, "text": piece}
        event = self._items.popleft()
        if self._head_offset:
            event = {**event, "text": event["text"][self._head_offset :]}
            self._head_offset = 0
        self._bytes = self._bytes - event_size(event) if self._items else 0
        if event.get("type") not in SKIPPABLE:
            self._essential_bytes -= event_size(event)
        return event

    async def get(self) -> Event:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._pop()

    async def get_batch(self, max_bytes: int = 1024 * 1024) -> list[Event]:
        """At least one event, and whatever else is queued, up to about ``max_bytes``."""
        batch = [await self.get()]
        taken = event_size(batch[0])
        while self._items and taken < max_bytes:
            batch.append(self._pop())
            taken += event_size(batch[-1])
        return batch
