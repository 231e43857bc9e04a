"""The per-client outbox: bounded memory, coalesced output, skipped output announced, essentials kept."""

from __future__ import annotations

from workbench.outbox import Outbox


def stream(text: str, request_id: str = "a", name: str = "stdout") -> dict[str, str]:
    return {"type": "stream", "id": request_id, "name": name, "text": text}


async def drain(outbox: Outbox) -> list[dict[str, object]]:
    events = []
    while len(outbox):
        events.append(await outbox.get())
    return events


async def test_consecutive_output_is_coalesced_per_stream() -> None:
    outbox = Outbox()
    for piece in ("a", "b", "c"):
        outbox.put(stream(piece))
    outbox.put(stream("!", name="stderr"))
    outbox.put(stream("d"))
    events = await drain(outbox)
    assert [(e["name"], e["text"]) for e in events] == [("stdout", "abc"), ("stderr", "!"), ("stdout", "d")]


async def test_a_slow_client_skips_output_with_a_notice_but_keeps_done() -> None:
    outbox = Outbox(max_bytes=1000, max_chunk=100)
    for _ in range(100):
        outbox.put(stream("x" * 90))
    assert outbox.queued_bytes <= 1000 + 200
    outbox.put({"type": "done", "id": "a", "status": "ok"})
    events = await drain(outbox)
    assert events[-1]["type"] == "done"
    notice = events[-2]
    assert notice["name"] == "stderr"
    assert "bytes of output skipped" in str(notice["text"])
    kept = sum(len(str(e["text"])) for e in events if e["type"] == "stream" and e["name"] == "stdout")
    skipped = int(str(notice["text"]).split("[workbench: ")[1].split()[0])
    assert kept < 90 * 100
    assert kept + skipped >= 90 * 100


async def test_one_big_event_fits_an_empty_outbox() -> None:
    outbox = Outbox(max_bytes=1000)
    outbox.put({"type": "display_data", "id": "a", "data": {"image/png": "y" * 5000}})
    assert [e["type"] for e in await drain(outbox)] == ["display_data"]


async def test_essential_events_are_never_dropped_but_flag_overflow() -> None:
    outbox = Outbox(max_bytes=1000)
    for n in range(100):
        outbox.put({"type": "kernel", "state": "idle", "reason": "x" * 50, "n": n})
    assert outbox.overflowed
    assert len(await drain(outbox)) == 100


async def test_batches_take_what_is_queued() -> None:
    outbox = Outbox()
    outbox.put({"type": "execute_result", "id": "a", "data": {}})
    outbox.put({"type": "done", "id": "a"})
    batch = await outbox.get_batch()
    assert [e["type"] for e in batch] == ["execute_result", "done"]
    assert outbox.queued_bytes == 0


async def test_a_huge_message_goes_out_whole_in_bounded_frames() -> None:
    outbox = Outbox(max_bytes=1000, max_chunk=100)
    text = "".join(chr(ord("a") + n % 26) for n in range(10_050))
    outbox.put(stream(text))
    outbox.put({"type": "done", "id": "a"})
    events = await drain(outbox)
    pieces = [str(e["text"]) for e in events if e["type"] == "stream"]
    assert max(len(piece) for piece in pieces) == 100
    assert "".join(pieces) == text
    assert events[-1]["type"] == "done"
    assert outbox.queued_bytes == 0
