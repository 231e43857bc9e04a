"""Jupyter WebSocket framing (no engine): both framings, buffers, and hostile frames."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import struct
from typing import Any

import pytest

from tests.jupyter_ws import message, pack_v1, unpack_v1
from workbench.errors import Invalid
from workbench.gateway.models import session_request
from workbench.gateway.protocol import FrameError, decode, encode


def kernel_message(buffers: list[bytes]) -> dict[str, Any]:
    msg = message("comm_msg", {"data": {"x": 1}})
    msg["header"]["date"] = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)  # as jupyter_client parses it
    msg["buffers"] = buffers
    return msg


def test_a_message_without_buffers_is_a_json_text_frame() -> None:
    frame = encode(kernel_message([]), "iopub", v1=False)
    assert isinstance(frame, str)
    body = json.loads(frame)
    assert body["channel"] == "iopub"
    assert body["msg_type"] == "comm_msg"
    assert body["header"]["date"].startswith("2026-01-02T03:04:05")


def test_buffers_travel_in_the_legacy_binary_framing() -> None:
    frame = encode(kernel_message([b"\x00\x01", b"abc"]), "iopub", v1=False)
    assert isinstance(frame, bytes)
    (count,) = struct.unpack("!I", frame[:4])
    offsets = [*struct.unpack(f"!{count}I", frame[4 : 4 * (count + 1)]), len(frame)]
    parts = [frame[a:b] for a, b in itertools.pairwise(offsets)]
    assert json.loads(parts[0])["content"] == {"data": {"x": 1}}
    assert parts[1:] == [b"\x00\x01", b"abc"]
    channel, decoded = decode(frame.replace(b'"channel": "iopub"', b'"channel": "shell"'), v1=False)
    assert channel == "shell"
    assert [bytes(b) for b in decoded["buffers"]] == [b"\x00\x01", b"abc"]


def test_the_v1_framing_both_ways() -> None:
    frame = encode(kernel_message([b"xyz"]), "iopub", v1=True)
    assert isinstance(frame, bytes)
    parsed = unpack_v1(frame)
    assert parsed["channel"] == "iopub"
    assert parsed["content"] == {"data": {"x": 1}}
    assert parsed["buffers"] == [b"xyz"]
    channel, decoded = decode(pack_v1(message("kernel_info_request", {})), v1=True)
    assert channel == "shell"
    assert decoded["header"]["msg_type"] == "kernel_info_request"


def test_a_message_without_a_channel_goes_where_its_type_implies() -> None:
    for kind, expected in (
        ("execute_request", "shell"),
        ("input_reply", "stdin"),
        ("interrupt_request", "control"),
    ):
        msg = message(kind, {})
        del msg["channel"]
        assert decode(json.dumps(msg), v1=False)[0] == expected


@pytest.mark.parametrize(
    "frame",
    [
        "",
        "null",
        "[]",
        "[" * 50_000,
        json.dumps({**message("x", {}), "channel": "iopub"}),
        json.dumps({**message("x", {}), "header": {"msg_id": "", "msg_type": "x"}}),
        json.dumps({**message("x", {}), "content": []}),
        b"",
        b"\xff\xff\xff\xff",
        struct.pack("!II", 1, 999),
        (3).to_bytes(8, "little") + (999).to_bytes(8, "little") * 3,
    ],
)
def test_hostile_frames_are_refused(frame: str | bytes) -> None:
    with pytest.raises(FrameError):
        decode(frame, v1=isinstance(frame, bytes) and len(frame) > 16)


def test_kernel_env_becomes_limits_and_the_rest_is_ignored() -> None:
    request = session_request({"name": "python3", "env": {"KERNEL_MEMORY": "1.5Gi", "KERNEL_CPUS": "2",
                                                          "LD_PRELOAD": "/x.so"}})  # fmt: skip
    assert request == {"memory_mb": 1536, "cpus": 2.0, "metadata": {"source": "jupyter-gateway"}}
    assert session_request({"env": {"KERNEL_MEMORY": "512M"}})["memory_mb"] == 488
    for env in ({"KERNEL_MEMORY": "-5G"}, {"KERNEL_MEMORY": "5 parsecs"}, {"KERNEL_CPUS": "nan"},
                {"KERNEL_IDLE_TIMEOUT": "1.5"}):  # fmt: skip
        with pytest.raises(Invalid):
            session_request({"env": env})
