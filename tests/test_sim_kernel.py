"""The simulator's own machinery: virtual time, threads, deadlocks, interruption, faults, memory."""
import struct
import threading

import pytest

from harness.conformance.support import Guarded, RoutineLog, dword, listener, overlapped, sockaddr, tcp_pair
from harness.winsock import constants as C
from sim import AccessViolation, SimulatedWinsock, SimulationDeadlock, World
from sim.scheduler import Scheduler


def test_scheduler_orders_by_time_then_insertion():
    sched = Scheduler()
    fired = []
    sched.call_at(20, lambda: fired.append("b"))
    sched.call_at(10, lambda: fired.append("a1"))
    sched.call_at(10, lambda: fired.append("a2"))
    cancelled = sched.call_at(15, lambda: fired.append("x"))
    cancelled.cancel()
    sched.advance_to(100)
    assert fired == ["a1", "a2", "b"] and sched.now_ns == 100


def test_posted_work_keeps_its_place_among_timers_and_survives_the_purge():
    """post() (segments, datagrams) orders with call_later's timers by time, then insertion; the
    purge of cancelled timers keeps it."""
    sched = Scheduler()
    fired = []
    sched.call_later(10, lambda: fired.append("timer"))
    sched.post(10, fired.append, "posted")
    sched.post(5, fired.append, "early")
    doomed = [sched.call_later(50, fired.append, "", "never") for _ in range(200)]
    for timer in doomed:
        timer.cancel()                                   # more than half the heap: purged
    assert sched.pending() == 3 and sched.next_time() == 5
    sched.advance_to(100)
    assert fired == ["early", "timer", "posted"] and sched.pending() == 0


def _story(profile):
    """A fixed sequence of calls; returns everything observable about it."""
    api = SimulatedWinsock(profile)
    trace = []
    client, server, lst = tcp_pair(api)
    port = api.CreateIoCompletionPort(server, 0, 9, 0)
    for _ in range(5):
        ovl = overlapped(api)
        arr = api.memory.alloc(16)
        data = api.memory.alloc(8)
        api.memory.write(arr, struct.pack("<I4xQ", 8, data))
        api.WSARecv(server, arr, 1, 0, dword(api, 0).ptr, ovl, 0)
    src = api.memory.alloc(20)
    api.memory.write(src, bytes(range(20)))
    api.send(client, src, 20, 0)
    n, key, o = dword(api), Guarded(api, 8), Guarded(api, 8)
    while api.GetQueuedCompletionStatus(port, n.ptr, key.ptr, o.ptr, 100):
        trace.append((n.u32(), struct.unpack("<Q", o.read())[0], api.world.now_ns))
    trace.append(("packets", [(p.proto, p.flags, p.seq, p.ack, len(p.payload))
                              for p in api.world.network.packets]))
    return trace


def test_runs_replay_identically():
    """Deterministic by default: the same calls give the same completions, times and packets."""
    assert _story("documented") == _story("documented")


def test_infinite_wait_with_nothing_scheduled_is_a_deadlock():
    api = SimulatedWinsock()
    event = api.WSACreateEvent()
    arr = api.memory.alloc(8)
    api.memory.write_u64(arr, event)
    with pytest.raises(SimulationDeadlock, match="WSAWaitForMultipleEvents"):
        api.WSAWaitForMultipleEvents(1, arr, False, C.INFINITE, False)
    lst, _ = listener(api)
    with pytest.raises(SimulationDeadlock, match="accept"):
        api.accept(lst, 0, 0)


def test_finite_wait_advances_virtual_time_exactly():
    api = SimulatedWinsock()
    start = api.world.now_ns
    assert api.SleepEx(1500, False) == 0
    assert api.world.now_ns - start == 1500 * 1_000_000


def test_closesocket_from_another_thread_interrupts_blocking_recv():
    """docs/decisions.md §4: WSAEINTR, a blocking call cancelled by closesocket from another thread."""
    api = SimulatedWinsock()
    client, server, _ = tcp_pair(api)
    result = {}
    buf = api.memory.alloc(16)

    def blocked():
        result["rc"] = api.recv(server, buf, 16, 0)
        result["err"] = api.WSAGetLastError()

    t = threading.Thread(target=blocked)
    t.start()
    while not any(th.waiting for th in api.process.threads):
        threading.Event().wait(0.001)
    assert api.closesocket(server) == 0
    t.join(timeout=10)
    assert not t.is_alive()
    assert result == {"rc": C.SOCKET_ERROR, "err": C.WSAEINTR}


def test_another_python_thread_can_complete_an_infinite_wait():
    api = SimulatedWinsock()
    event = api.WSACreateEvent()
    arr = api.memory.alloc(8)
    api.memory.write_u64(arr, event)
    started = threading.Event()

    def helper():
        api.GetCurrentThreadId()          # a Python thread counts once it has used the world
        started.set()
        threading.Event().wait(0.05)
        api.WSASetEvent(event)

    t = threading.Thread(target=helper)
    t.start()
    started.wait()
    assert api.WSAWaitForMultipleEvents(1, arr, False, C.INFINITE, False) == 0
    t.join()


def test_many_python_threads_share_a_world_safely():
    """Several Python threads, each its own simulated thread, hammering one process."""
    api = SimulatedWinsock()
    errors = []

    def worker(i):
        try:
            for _ in range(50):
                client, server, lst = tcp_pair(api)
                data = api.memory.alloc(4)
                api.memory.write_u32(data, i)
                assert api.send(client, data, 4, 0) == 4
                out = api.memory.alloc(4)
                assert api.recv(server, out, 4, C.MSG_WAITALL) == 4
                assert api.memory.read_u32(out) == i
                for s in (client, server, lst):
                    assert api.closesocket(s) == 0
        except Exception as exc:       # collected and asserted below, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len({t.tid for t in api.process.threads}) >= 4


def test_fault_injection_reaches_inprogress():
    """docs/decisions.md §4: errors with no realistic cause come from an explicit hook."""
    api = SimulatedWinsock()
    s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    api.process.faults.inject("WSAIoctl", C.WSAEINPROGRESS, code=C.FIONREAD)
    n = dword(api)
    assert api.WSAIoctl(s, C.FIONREAD, 0, 0, Guarded(api, 4).ptr, 4, n.ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEINPROGRESS
    assert api.WSAIoctl(s, C.FIONREAD, 0, 0, Guarded(api, 4).ptr, 4, n.ptr, 0, 0) == 0


def test_network_down_is_enetdown():
    """docs/decisions.md §4: WSAENETDOWN when the host's network is taken down."""
    api = SimulatedWinsock()
    client, server, _ = tcp_pair(api)
    api.process.host.up = False
    assert api.WSAIoctl(client, C.FIONREAD, 0, 0, Guarded(api, 4).ptr, 4, dword(api).ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAENETDOWN
    assert api.send(client, api.memory.alloc(1), 1, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAENETDOWN


def test_overlapped_freed_before_completion_is_reported():
    """Windows would scribble on freed memory; the simulator records the bug instead."""
    api = SimulatedWinsock()
    client, server, _ = tcp_pair(api)
    ovl = overlapped(api)
    arr = api.memory.alloc(16)
    data = api.memory.alloc(8)
    api.memory.write(arr, struct.pack("<I4xQ", 8, data))
    assert api.WSARecv(server, arr, 1, 0, dword(api, 0).ptr, ovl, 0) == C.SOCKET_ERROR
    api.memory.free(ovl)
    src = api.memory.alloc(3)
    api.send(client, src, 3, 0)
    api.SleepEx(10, False)
    assert [d.kind for d in api.kernel.diagnostics] == ["overlapped-unwritable"]


def test_profile_overrides_are_validated_and_marked_assumed():
    """A knob set by a test is recorded as such in the ledger; an impossible value is refused."""
    from sim import ProfileError
    api = SimulatedWinsock(overrides={"wfp_query_completion": "pending"})
    assert api.profile.wfp_query_completion == "pending"
    assert api.profile.assignments["wfp_query_completion"].source == "override"
    with pytest.raises(ProfileError, match="wfp_query_completion"):
        SimulatedWinsock(overrides={"wfp_query_completion": "sometimes"})
    with pytest.raises(ProfileError, match="no such decision point"):
        SimulatedWinsock(overrides={"nonsense": "x"})


def test_wspioctl_reports_through_lperrno_and_queues_apc_to_named_thread():
    """WSPIoctl: the error goes to *lpErrno; the APC goes to the thread in the WSATHREADID copy."""
    api = SimulatedWinsock()
    s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    err = dword(api, 0)
    n = dword(api)
    assert api.WSPIoctl(0xDEADBEEF, C.FIONREAD, 0, 0, 0, 0, n.ptr, 0, 0, 0, err.ptr) == C.SOCKET_ERROR
    assert err.u32() == C.WSAENOTSOCK
    other = api.new_thread("worker")
    tid = api.memory.alloc(16)
    api.memory.write(tid, struct.pack("<QQ", other.handle, 0))
    log = RoutineLog(api)
    ovl = overlapped(api)
    out = Guarded(api, 4)
    assert api.WSPIoctl(s, C.FIONREAD, 0, 0, out.ptr, 4, n.ptr, ovl, log.ptr, tid, err.ptr) == 0
    assert err.u32() == 0
    assert api.SleepEx(0, True) == 0 and log.calls == []
    with api.as_thread(other):
        assert api.SleepEx(0, True) == C.WAIT_IO_COMPLETION
    assert len(log.calls) == 1
    bad = api.memory.alloc(16)
    assert api.WSPIoctl(s, C.FIONREAD, 0, 0, out.ptr, 4, n.ptr, ovl, log.ptr, bad, err.ptr) == C.SOCKET_ERROR
    assert err.u32() == C.WSAEINVAL


def test_memory_model():
    api = SimulatedWinsock()
    mem = api.memory
    a = mem.alloc(10)
    b = mem.alloc(10)
    assert b - a >= 0x2000                       # a guard page between allocations
    assert mem.check(a, 10, True) and not mem.check(a, 11, True) and mem.check(a + 5, 0, True)
    ro = mem.alloc(4, prot="r")
    assert mem.check(ro, 4, False) and not mem.check(ro, 4, True)
    mem.free(a)
    assert not mem.check(a, 1, False)
    assert mem.invalid_pointer() == a
    with pytest.raises(AccessViolation):
        mem.read(a, 1)
    with pytest.raises(AccessViolation):
        mem.free(a)


def test_handles_are_not_reused():
    api = SimulatedWinsock()
    seen = set()
    for _ in range(20):
        s = api.socket(C.AF_INET, C.SOCK_DGRAM, 0)
        assert s not in seen and s % 4 == 0
        seen.add(s)
        api.closesocket(s)


def test_world_processes_talk_across_hosts_v4_and_v6():
    world = World()
    a = world.add_host("a", ["192.0.2.1", "2001:db8::1"])
    b = world.add_host("b", ["192.0.2.2", "2001:db8::2"])
    server = world.start_process(b, "server")
    client = world.start_process(a, "client")
    for family, ip in ((C.AF_INET, "192.0.2.2"), (C.AF_INET6, "2001:db8::2")):
        lst = server.socket(family, C.SOCK_STREAM, 0)
        ptr, n = sockaddr(server, "0.0.0.0" if family == C.AF_INET else "::", 8080)
        assert server.bind(lst, ptr, n) == 0 and server.listen(lst, 4) == 0
        c = client.socket(family, C.SOCK_STREAM, 0)
        to, tolen = sockaddr(client, ip, 8080)
        before = world.now_ns
        assert client.connect(c, to, tolen) == 0
        assert world.now_ns - before >= 2 * world.network.link_latency_ns   # SYN and SYN-ACK crossed the link
        accepted = server.accept(lst, 0, 0)
        assert accepted != C.INVALID_SOCKET
        server.closesocket(lst)
    assert client.GetCurrentProcessId() != server.GetCurrentProcessId()


def test_connect_to_unreachable_host_times_out():
    world = World()
    a = world.add_host("a", ["192.0.2.1"])
    api = world.start_process(a, "client")
    s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    to, tolen = sockaddr(api, "198.51.100.7", 443)
    assert api.connect(s, to, tolen) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAETIMEDOUT
