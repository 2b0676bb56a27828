"""The reference redirect proxy, packaged for a guest: a console program or a Windows service.

    python -m harness.proxy_service run --agent C:\\wfp\\winsock-agent.exe --tcp-port 9000 --register-policy
    python -m harness.proxy_service install --agent C:\\wfp\\winsock-agent.exe --tcp-port 9000 --register-policy
    python -m harness.proxy_service run --target wine --tcp-port 9000
    python -m harness.proxy_service uninstall
    python -m harness.proxy_service run --target sim --demo 5

The proxy is :class:`harness.proxy.reference.RedirectProxy` (WinsockApi code only)
over a real Winsock in the winsock-agent, started as the proxy's child process
(``--target agent`` on Windows, ``--target wine`` under Wine), or over the
simulator with ``--target sim``. See harness/PROXY_SERVICE.md.

Modules: ``options`` (command line, install plan, the account and the code-ACL decision), ``core`` (session, policy
plan, service state machine: pure), ``targets`` (agent / sim), ``win32`` (the
thin ctypes layer: advapi32, kernel32), ``cli`` (main). Importing any of them
loads no Windows library and does not import the simulator.
"""
