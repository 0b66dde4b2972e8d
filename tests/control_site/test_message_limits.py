"""The checks ingest runs on every message stay linear in the message's size: no payload a
site can send costs the control site's event loop more than a few milliseconds."""

from __future__ import annotations

import time

import pytest

from twin.control_site.messages import MAX_PAYLOAD_BYTES, nesting_depth


@pytest.mark.parametrize(
    "payload",
    [
        b'"' + b'\\"' * (MAX_PAYLOAD_BYTES // 2 - 1),  # an unterminated string of escaped quotes
        b'"' + b"\\\\" * (MAX_PAYLOAD_BYTES // 2 - 1),
        b'["' * (MAX_PAYLOAD_BYTES // 2),
        b"[" * MAX_PAYLOAD_BYTES,
    ],
    ids=["escaped-quotes", "escaped-backslashes", "open-strings", "brackets"],
)
def test_the_depth_scan_is_linear_on_hostile_payloads(payload: bytes) -> None:
    started = time.perf_counter()
    nesting_depth(payload)
    assert time.perf_counter() - started < 0.5  # was ~50 s for the escaped quotes


def test_brackets_inside_strings_do_not_nest() -> None:
    assert nesting_depth(b'{"a":"[[[","b":[{"c":"\\"]"}]}') == 3
    assert nesting_depth(b'{"unterminated":"[[[[') == 1
