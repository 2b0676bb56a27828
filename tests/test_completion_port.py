"""harness/proxy/completion.py over any WinsockApi: AcceptEx, ConnectEx and a zero-byte WSARecv on one port.

Runs on the simulator and, where it can start, on the Wine target (the winsock-agent under wine64):
the IOCP reference proxy and echo server use nothing else.
"""
import pytest

from harness import targets
from harness.proxy.completion import CompletionPort
from harness.winsock import constants as C
from harness.winsock import sockaddr


@pytest.fixture(params=["sim", "wine"])
def api(request):
    try:
        targets.check(request.param)
        api = targets.make_api(request.param, "documented")
    except targets.TargetError as exc:
        pytest.skip(str(exc))
    yield api
    targets.close_api(api)


def _name(api, ip, port):
    name = sockaddr.from_text(ip, port)
    ptr = api.memory.alloc(len(name))
    api.memory.write(ptr, name)
    return ptr, len(name)


def test_accept_connect_and_relay_through_the_port(api):
    port = CompletionPort(api)
    done = []

    def note(s, what, _slot, err, _n):
        done.append((what, s, err))

    lst = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    assert api.bind(lst, *_name(api, "127.0.0.1", 0)) == 0 and api.listen(lst, 8) == 0
    buf, n = api.memory.alloc(128), api.memory.alloc(4)
    api.memory.write_u32(n, 128)
    assert api.getsockname(lst, buf, n) == 0
    listen_port = sockaddr.unpack(api.memory.read(buf, api.memory.read_u32(n)))[2]
    port.associate(lst)
    acc = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    slots = port.slots(3)
    assert port.accept(lst, acc, slots[0], (note, acc, "accept")) == 0
    client = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    assert api.bind(client, *_name(api, "0.0.0.0", 0)) == 0
    port.associate(client)
    assert port.connect(client, *_name(api, "127.0.0.1", listen_port), slots[1], (note, client, "connect")) == 0
    while len(done) < 2:
        assert port.next(5000), done
    assert sorted((what, err) for what, _s, err in done) == [("accept", 0), ("connect", 0)]
    value = api.memory.alloc(8)
    api.memory.write_u64(value, lst)
    assert api.setsockopt(acc, C.SOL_SOCKET, C.SO_UPDATE_ACCEPT_CONTEXT, value, 8) == 0
    assert api.setsockopt(client, C.SOL_SOCKET, C.SO_UPDATE_CONNECT_CONTEXT, 0, 0) == 0
    port.associate(acc)
    assert port.readable(acc, slots[2], (note, acc, "readable")) == 0
    api.memory.write(buf, b"ping")
    assert api.send(client, buf, 4, 0) == 4
    while len(done) < 3:
        assert port.next(5000), done
    assert done[2] == ("readable", acc, 0)
    assert api.recv(acc, buf, 128, 0) == 4 and api.memory.read(buf, 4) == b"ping"   # the data waited for us
    for s in (acc, client, lst):
        assert api.closesocket(s) == 0
    port.close()
