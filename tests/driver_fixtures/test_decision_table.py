"""The sample driver's decision table, C against Python, on every input.

src/decision.c is pure C (include/wfprc_decision.h), so it is compiled here
for the host as a shared library and called through ctypes; the simulated
callout takes its decisions from harness.sample_driver.decision. Any input
on which the two tables differ fails here.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from harness.sample_driver.decision import Decision, after_acquire, before_acquire

DRIVER = Path(__file__).resolve().parents[2] / "driver-fixtures" / "wfp-redirect-callout"
INT32 = st.integers(-2**31, 2**31 - 1)
FLAGS = st.one_of(st.booleans().map(int), INT32)       # C reads any non-zero int as true


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no host C compiler (Debian package 'gcc')")
    lib = tmp_path_factory.mktemp("decision") / "libdecision.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-I", str(DRIVER / "include"),
                    str(DRIVER / "src" / "decision.c"), "-o", str(lib)], check=True, capture_output=True)
    c = ctypes.CDLL(str(lib))
    c.WfprcDecideBeforeAcquire.argtypes = [ctypes.c_int] * 4
    c.WfprcDecideAfterAcquire.argtypes = [ctypes.c_int] * 3
    c.WfprcDecideBeforeAcquire.restype = c.WfprcDecideAfterAcquire.restype = ctypes.c_int
    return c


def test_every_small_input_agrees(table):
    states = range(-1, 6)
    for write in (0, 1):
        for data in (0, 1):
            for matched in (0, 1):
                for state in states:
                    py = before_acquire(has_write_right=write, has_layer_data=data, policy_matched=matched,
                                        redirect_state=state)
                    assert table.WfprcDecideBeforeAcquire(write, data, matched, state) == py.value
    for reauth in (0, 1):
        for own in (0, 1):
            for foreign in (0, 1):
                py = after_acquire(is_reauthorize=reauth, previous_modified_by_self=own,
                                   foreign_local_redirect_in_chain=foreign)
                assert table.WfprcDecideAfterAcquire(reauth, own, foreign) == py.value


def test_property_tables_agree(table):
    @given(FLAGS, FLAGS, FLAGS, INT32, FLAGS, FLAGS, FLAGS)
    def run(write, data, matched, state, reauth, own, foreign):
        first = before_acquire(has_write_right=write, has_layer_data=data, policy_matched=matched,
                               redirect_state=state)
        assert table.WfprcDecideBeforeAcquire(write, data, matched, state) == first.value
        second = after_acquire(is_reauthorize=reauth, previous_modified_by_self=own,
                               foreign_local_redirect_in_chain=foreign)
        assert table.WfprcDecideAfterAcquire(reauth, own, foreign) == second.value
        assert second in (Decision.PERMIT, Decision.REDIRECT)
    run()


def test_a_changed_c_table_is_caught(table, tmp_path):
    """The comparison is not vacuous: a C table that redirects PREVIOUSLY_BY_SELF differs."""
    source = (DRIVER / "src" / "decision.c").read_text().replace(
        "    case WFPRC_STATE_REDIRECTED_BY_OTHER:\n", "    case WFPRC_STATE_REDIRECTED_BY_OTHER:\n"
        "    case WFPRC_STATE_PREVIOUSLY_REDIRECTED_BY_SELF:\n")
    (tmp_path / "decision.c").write_text(source)
    lib = tmp_path / "libbroken.so"
    subprocess.run([shutil.which("cc") or "gcc", "-shared", "-fPIC", "-I", str(DRIVER / "include"),
                    str(tmp_path / "decision.c"), "-o", str(lib)], check=True, capture_output=True)
    broken = ctypes.CDLL(str(lib))
    state = 3                                   # FWPS_CONNECTION_PREVIOUSLY_REDIRECTED_BY_SELF
    py = before_acquire(has_write_right=1, has_layer_data=1, policy_matched=1, redirect_state=state)
    assert broken.WfprcDecideBeforeAcquire(1, 1, 1, state) != py.value
