"""A simulated Windows world for WFP connection-redirect testing.

    from sim import SimulatedWinsock
    api = SimulatedWinsock()                 # one elevated process, WSAStartup done
    api = SimulatedWinsock("windows-observed")

    from sim import World
    world = World()
    host = world.add_host("client", ["192.0.2.10", "2001:db8::10"])
    proxy = world.start_process(host, "proxy", elevated=True)

Imports only `harness.winsock` of the project (docs/decisions.md §2).
"""
from sim.errors import AccessViolation, SimulationDeadlock, WsaError  # noqa: F401
from sim.profiles import Profile, ProfileError, load as load_profile  # noqa: F401
from sim.winsock import SimulatedWinsock  # noqa: F401
from sim.world import World  # noqa: F401
