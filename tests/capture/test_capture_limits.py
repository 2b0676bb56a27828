"""Bounds of `capture analyze`: gzip decompression is capped.

A gzip file can expand ~1000-fold; the analyzer decompresses in a streaming
way and refuses a capture whose decompressed size passes the cap (the
`max_decompressed` argument / `--max-decompressed` option) with one line
naming the file and the limit, before holding more than the cap in memory.
"""
from __future__ import annotations

import gzip
import struct
import tracemalloc

import pytest

from harness.capture import MAX_DECOMPRESSED, CaptureError, analyze_file
from harness.cli import main

MiB = 1024 * 1024
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def gzip_bomb(path, mib: int):
    """A valid pcap header followed by `mib` MiB of zeros (zero-length records), gzip-compressed."""
    zeros = bytes(MiB)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(PCAP_HEADER)
        for _ in range(mib):
            f.write(zeros)
    return path


def test_gzip_over_the_limit_is_refused_with_one_line(tmp_path, capsys):
    bomb = gzip_bomb(tmp_path / "bomb.pcap.gz", 8)
    with pytest.raises(CaptureError) as info:
        analyze_file(bomb, max_decompressed=MiB)
    assert str(info.value).startswith(f"{bomb}: ") and "more than 1 MiB" in str(info.value)
    assert main(["capture", "analyze", str(bomb), "--max-decompressed", "1M"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    line, = captured.err.splitlines()
    assert str(bomb) in line and "1 MiB" in line and "--max-decompressed" in line


def test_the_limit_is_exact_and_overridable(tmp_path):
    raw = PCAP_HEADER + bytes(16 * 10)                 # ten empty records
    path = tmp_path / "ten.pcap.gz"
    path.write_bytes(gzip.compress(raw))
    assert analyze_file(path, max_decompressed=len(raw)).packets == 0   # records without IP are skipped
    with pytest.raises(CaptureError, match=f"more than {len(raw) - 1} bytes"):
        analyze_file(path, max_decompressed=len(raw) - 1)


@pytest.mark.parametrize("text", ["0", "-1", "lots", "1X"])
def test_bad_limit_option_is_a_usage_error(tmp_path, text, capsys):
    with pytest.raises(SystemExit) as info:
        main(["capture", "analyze", str(tmp_path / "x.pcap"), "--max-decompressed", text])
    assert info.value.code == 2 and "--max-decompressed" in capsys.readouterr().err


def test_default_limit_keeps_a_200_kb_bomb_small(tmp_path):
    bomb = gzip_bomb(tmp_path / "bomb.pcap.gz", 200)
    assert bomb.stat().st_size < 250_000                 # 200 KB on disk, 200 MiB inside
    tracemalloc.start()
    try:
        with pytest.raises(CaptureError, match="more than 64 MiB"):
            analyze_file(bomb)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert MAX_DECOMPRESSED == 64 * MiB
    assert peak < MAX_DECOMPRESSED + 8 * MiB, peak
