"""The Pythonic redirect helpers work whatever answer a profile gives to the contested size rules."""
import pytest

from harness.proxy import redirect as rd
from harness.sample_driver import unpack_context
from sim.worlds.ready import redirected_tcp

SHORT_ANSWERS = ["insufficient_buffer", "WSAEFAULT", "WSAENOBUFS", "WSAEINVAL"]


@pytest.mark.parametrize("probe", [True, False])
@pytest.mark.parametrize("short", SHORT_ANSWERS)
def test_queries_succeed_under_every_size_answer(probe, short):
    """Field code retries on WSAEFAULT/WSAENOBUFS, the docs on ERROR_INSUFFICIENT_BUFFER (docs/facts.md §6.5, C2)."""
    probe_answer = {"WSAENOBUFS": "WSAEFAULT"}.get(short, short)    # the probe has no WSAENOBUFS answer
    r = redirected_tcp(overrides={"query_size_probe": probe_answer, "query_short_buffer": short})
    records = rd.query_records(r.api, r.sock, probe=probe)
    context = rd.query_context(r.api, r.sock, probe=probe)
    assert records and len(records) > 16
    assert unpack_context(context).original_remote.port == r.original[1]
    assert records == rd.query_records(r.api, r.sock, probe=not probe)


def test_not_redirected_is_none_and_other_errors_raise():
    r = redirected_tcp()
    assert rd.query_records(r.app, r.app_sock) is None          # FWP_E_NOT_FOUND
    with pytest.raises(rd.WinsockError) as info:
        rd.query_records(r.api, r.listener)                       # a listening socket: WSAENOTCONN
    assert info.value.code == 10057
