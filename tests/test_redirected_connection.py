"""The native `redirected` fixture's logic, run against the simulated sample driver.

harness.redirected_connection makes the installed driver redirect a connect of the
test process to its own listener; here the policy store fronts the simulated
driver (the same SimPolicyStore the packaged proxy's --target sim uses), so
everything but the Windows registry/IOCTL calls runs for real.
"""
import types

import pytest

from harness.proxy_service import core
from harness.proxy_service.targets import SimPolicyStore
from harness.redirected_connection import NoRedirectPolicy, redirected_connection
from harness.winsock import constants as C
from harness.proxy import redirect as rd
from harness import sample_driver as sd
from sim import World
from sim.worlds.sample_callout import install_sample_driver


def _guest(policy):
    world = World()
    host = world.add_host("guest", ["192.0.2.50"])
    api = world.start_process(host, "pytest")
    callout = install_sample_driver(world, host, policy)
    registry = {name: (regtype, core.encode_value(regtype, value))
                for name, (regtype, value) in policy.to_registry_values().items()}
    store = SimPolicyStore(types.SimpleNamespace(registry=registry, callout=callout))
    return api, store


def test_the_driver_redirects_this_process_to_itself():
    api, store = _guest(sd.RedirectPolicy(tcp_ports=(80,), tcp_proxy_port=9000))   # no proxy registered yet
    conn = redirected_connection(api, store)
    assert sd.parse_registry_values(store.read_values()).proxy_process_id == api.GetCurrentProcessId()
    assert conn.original == ("127.0.0.1", 80)
    records = rd.query_records(api, conn.sock)
    context = sd.unpack_context(rd.query_context(api, conn.sock))
    assert records and (context.original_remote.host, context.original_remote.port) == conn.original
    assert context.process_id == api.GetCurrentProcessId()
    assert rd.query_records(api, conn.app_sock) is None            # the connecting side was not redirected to
    conn.release()
    assert sd.parse_registry_values(store.read_values()).proxy_process_id == 0
    assert api.WSAIoctl(conn.sock, C.FIONREAD, 0, 0, 0, 0, api.memory.alloc(4), 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAENOTSOCK                  # released sockets are closed


def test_a_policy_without_tcp_ports_is_reported():
    api, store = _guest(sd.RedirectPolicy(udp_ports=(53,), udp_proxy_port=9053))
    with pytest.raises(NoRedirectPolicy, match="redirects no TCP port"):
        redirected_connection(api, store)


def test_release_leaves_another_proxys_registration_alone():
    api, store = _guest(sd.RedirectPolicy(tcp_ports=(80,), tcp_proxy_port=9000))
    conn = redirected_connection(api, store)
    plan = core.plan_registration(store.read_values(), 4242, tcp_port=9000)
    core.apply_plan(store, plan)                                     # another proxy took over
    conn.release()
    assert sd.parse_registry_values(store.read_values()).proxy_process_id == 4242
