"""What a guest may send back is bounded (size, depth, names), and a Windows
exit code survives the POSIX stand-in's 8-bit exit status."""

from __future__ import annotations

import os

import pytest

from harness.vm.errors import HostileGuest


def test_windows_exit_codes_arrive_whole_from_the_stand_in(guest):
    # winemu.py writes its 32-bit code to $WFPH_WIDE_EXIT; the POSIX dialect reports it.
    for code in (3010, 259, 1056, -2146762487):
        r = guest.run_script(f'printf %s {code} > "$WFPH_WIDE_EXIT"; exit {code & 0xFF}')
        assert r.exit_code == code
    # a plain command whose status matches nothing written keeps its own status
    assert guest.run_script("exit 194").exit_code == 194
    # a stale wide code never leaks into the next command
    assert guest.run_script('printf 3010 > "$WFPH_WIDE_EXIT"; exit 7').exit_code == 7


def test_download_refuses_more_than_the_limit(guest, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "big.bin").write_bytes(os.urandom(10_000))
    with pytest.raises(HostileGuest) as e:
        guest.download(str(remote / "big.bin"), tmp_path / "x" / "big.bin", max_bytes=1000)
    assert "over the limit of 1000" in str(e.value) and not e.value.retryable
    assert not (tmp_path / "x" / "big.bin").exists() and not list((tmp_path / "x").glob("*.part"))
    seen = []
    t = guest.download(str(remote / "big.bin"), tmp_path / "y" / "big.bin", max_bytes=10_000,
                       progress=lambda done, total: seen.append((done, total)))
    assert t.size == 10_000 and seen[-1] == (10_000, 10_000)


@pytest.mark.parametrize("make, words", [
    (lambda r: os.makedirs(r / "a" / "b" / "c" / "d"), "deeper than 3 levels"),
    (lambda r: (r / ("n" * 40)).write_text("x"), "40-character file name"),
    (lambda r: (r / "bell\x07.txt").write_text("x"), "refusing remote file name"),
])
def test_download_dir_bounds_depth_and_names(guest, tmp_path, make, words):
    remote = tmp_path / "results"
    remote.mkdir()
    (remote / "junit.xml").write_text("<testsuites/>")
    make(remote)
    with pytest.raises(HostileGuest) as e:
        guest.download_dir(str(remote), tmp_path / "local", max_depth=3, max_name_length=32)
    assert words in str(e.value)
