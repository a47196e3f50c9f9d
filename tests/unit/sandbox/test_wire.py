"""The fork server's binary wire format (zygote.c declares the same structs: sizes are asserted there)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lorafleet.shared.sandbox import RunLimits, _wire

ZYGOTE_C = Path(_wire.__file__).with_name("zygote.c").read_text()


def test_struct_sizes_match_the_c_engine():
    sizes = dict(re.findall(r"sizeof\((\w+)\) == (\d+)", ZYGOTE_C))
    assert int(sizes["request_t"]) == _wire.REQUEST.size == 88
    assert int(sizes["response_t"]) == _wire.RESPONSE.size == 72


def test_request_round_trip():
    limits = RunLimits(time_s=1.5, memory_mb=64).wire()
    raw = _wire.pack_request(limits, b"print(1)", b"in\n", b'{"x": 1}')
    got, n_code, n_stdin, n_payload = _wire.unpack_request(raw[: _wire.REQUEST.size])
    assert got == {k: limits[k] for k in got} and set(got) == set(limits)
    body = raw[_wire.REQUEST.size:]
    assert (body[:n_code], body[n_code:n_code + n_stdin], body[n_code + n_stdin:]) == (b"print(1)", b"in\n", b'{"x": 1}')
    assert len(body) == n_code + n_stdin + n_payload


@pytest.mark.parametrize(
    "head",
    [
        {"exit_code": 0, "signal": None, "killed_for": None, "wall_ms": 1.5, "cpu_ms": 0.5, "maxrss_kb": 9000,
         "setup_error": None, "stdout_truncated": False, "stderr_truncated": False},
        {"exit_code": None, "signal": 9, "killed_for": "output", "wall_ms": 2.0, "cpu_ms": 1.0, "maxrss_kb": 1,
         "setup_error": "OSError: chdir: denied", "stdout_truncated": True, "stderr_truncated": False},
    ],
)
def test_response_round_trip(head):
    raw = _wire.pack_response(head, b"out", b"err")
    got, (n_setup, n_error, n_out, n_err) = _wire.unpack_response(raw[: _wire.RESPONSE.size])
    rest = raw[_wire.RESPONSE.size:]
    setup, error = rest[:n_setup], rest[n_setup:n_setup + n_error]
    assert rest[n_setup + n_error:] == b"outerr" and (n_out, n_err) == (3, 3)
    assert _wire.finish_head(got, setup, error) == head


def test_server_error_and_bad_magic():
    raw = _wire.pack_response({"error": "OSError: fork: no memory"})
    got, sizes = _wire.unpack_response(raw[: _wire.RESPONSE.size])
    assert _wire.finish_head(got, b"", raw[_wire.RESPONSE.size:]) == {"error": "OSError: fork: no memory"}
    with pytest.raises(ValueError, match="not a sandbox request"):
        _wire.unpack_request(bytes(_wire.REQUEST.size))
