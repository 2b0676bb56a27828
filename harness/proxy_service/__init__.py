"""The reference redirect proxy, packaged for a guest: a console program or a Windows service.

    python -m harness.proxy_service run --tcp-port 9000 --udp-port 9053 --register-policy
    python -m harness.proxy_service install --tcp-port 9000 --udp-port 9053 --register-policy --start-type auto
    python -m harness.proxy_service uninstall
    python -m harness.proxy_service run --target sim --demo 5

The proxy is :class:`harness.proxy.reference.RedirectProxy` (WinsockApi code only)
over :class:`harness.native.NativeWinsock` on Windows, or over the simulator
with ``--target sim``. See harness/PROXY_SERVICE.md.

Modules: ``options`` (command line, install plan), ``core`` (session, policy
plan, service state machine: pure), ``targets`` (native / sim), ``win32`` (the
thin ctypes layer: advapi32, kernel32), ``cli`` (main). Importing any of them
loads no Windows library and does not import the simulator.
"""
