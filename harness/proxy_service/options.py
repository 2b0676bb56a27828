"""Command line of ``python -m harness.proxy_service`` and the install plan (pure).

    run        the proxy as a console program (Ctrl-C / Ctrl-Break stops it)
    service    the entry the Service Control Manager starts (never by hand)
    install    create the Windows service whose command line is `service ...`
    uninstall  stop and delete it
"""
from __future__ import annotations

import argparse
import ipaddress
import ntpath
import os
import subprocess
from dataclasses import dataclass

from harness import sample_driver as sd

from .core import ProxyConfig

PROG = "python -m harness.proxy_service"
MODULE = "harness.proxy_service"
DEFAULT_SERVICE_NAME = "WfpRedirectProxy"
DEFAULT_DISPLAY_NAME = "WFP redirect proxy (harness reference)"
DESCRIPTION = ("Reference redirect proxy for the WFP connect-redirect callout: accepts redirected "
               "connections, queries the redirect records and context, forwards to the original "
               "destination. Part of the WFP redirect test harness.")
SIM_DEFAULT_PORTS = (9000, 9053)          # --target sim without ports: VendorX's ports in sim.worlds.scenarios
START_TYPES = {"demand": 3, "auto": 2}    # SERVICE_DEMAND_START, SERVICE_AUTO_START
TARGETS = ("agent", "wine", "sim")


def _port(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"port {value} is out of range 0..65535")
    return value


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 or IPv6 address") from None


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
        return value
    return parse


def _service_name(text: str) -> str:
    if not text or len(text) > 256 or any(c in text for c in "/\\"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid service name (1..256 chars, no / or \\)")
    return text


def _proxy_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("proxy")
    g.add_argument("--tcp-port", type=_port, metavar="PORT",
                   help="listen for redirected TCP connections on this port (the policy's TcpProxyPort)")
    g.add_argument("--udp-port", type=_port, metavar="PORT",
                   help="listen for redirected UDP flows on this port (the policy's UdpProxyPort)")
    g.add_argument("--address", dest="addresses", action="append", type=_address, metavar="IP",
                   help="listen on this address; repeat for several (default: 127.0.0.1 and ::1, where the "
                        "driver redirects to)")
    g.add_argument("--no-set-records", action="store_true",
                   help="do not copy the redirect records onto outbound connections (reproduces the "
                        "missing-set loop; never in production)")
    g.add_argument("--register-policy", action="store_true",
                   help="write this process's PID as ProxyProcessId under the driver's Parameters key and make "
                        "the driver reload (IOCTL_WFPRC_RELOAD_POLICY); ProxyProcessId=0 again at exit")
    g.add_argument("--log", metavar="FILE", help="also append the log to FILE")
    g.add_argument("--stats-interval", type=_positive(float), default=60.0, metavar="SECONDS",
                   help="log the proxy's counters this often (default: 60)")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _agent_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", metavar="PATH", default=os.environ.get("WFP_AGENT_EXE") or None,
                   help="the winsock-agent.exe the proxy starts as its child process and does its Winsock calls "
                        "in (--target agent; default: env WFP_AGENT_EXE)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="The reference WFP redirect proxy, as a console "
                                     "program or a Windows service.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the proxy in this console until Ctrl-C / Ctrl-Break")
    _proxy_arguments(run)
    t = run.add_argument_group("target")
    t.add_argument("--target", choices=TARGETS, default="agent",
                   help="agent: real Winsock in the winsock-agent (--agent) and the real driver (Windows); "
                        "wine: the same over Wine's Winsock here (no WFP driver); sim: the same code in the "
                        "simulator, with the sample driver installed")
    _agent_argument(t)
    t.add_argument("--demo", type=_positive(int), metavar="N",
                   help="--target sim only: an app makes N TCP connections through the proxy to an echo "
                        "server; print the stats and exit (0 if all N arrived intact)")
    t.add_argument("--profile", default="documented", help="--target sim only: the simulator profile")

    service = sub.add_parser("service", help="the entry point the Service Control Manager starts")
    _proxy_arguments(service)
    service.add_argument("--name", type=_service_name, default=DEFAULT_SERVICE_NAME, help="the service name")
    _agent_argument(service)

    install = sub.add_parser("install", help="install the proxy as a Windows service (elevated)")
    _proxy_arguments(install)
    install.add_argument("--name", type=_service_name, default=DEFAULT_SERVICE_NAME, help="the service name")
    install.add_argument("--display-name", default=DEFAULT_DISPLAY_NAME)
    install.add_argument("--start-type", choices=tuple(START_TYPES), default="demand",
                         help="demand (sc start) or auto (at boot); default: demand")
    install.add_argument("--start", action="store_true", help="start the service once installed")
    _agent_argument(install)

    uninstall = sub.add_parser("uninstall", help="stop and delete the service (elevated)")
    uninstall.add_argument("--name", type=_service_name, default=DEFAULT_SERVICE_NAME, help="the service name")
    uninstall.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    uninstall.add_argument("--log", metavar="FILE", help=argparse.SUPPRESS)
    return parser


def parse(argv, parser: argparse.ArgumentParser | None = None):
    """(args, ProxyConfig or None). Usage errors exit 2 through argparse."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if args.command == "uninstall":
        return args, None
    return args, config_from(args, parser)


def config_from(args, parser: argparse.ArgumentParser) -> ProxyConfig:
    target = getattr(args, "target", "agent")
    sim = target == "sim"
    if getattr(args, "demo", None) and not sim:
        parser.error("--demo needs --target sim")
    if getattr(args, "profile", "documented") != "documented" and not sim:
        parser.error("--profile needs --target sim")
    tcp, udp = args.tcp_port, args.udp_port
    if tcp is None and udp is None and sim:
        tcp, udp = SIM_DEFAULT_PORTS
    tcp, udp = tcp or 0, udp or 0
    if not (tcp or udp):
        parser.error("give --tcp-port and/or --udp-port (the TcpProxyPort/UdpProxyPort of the driver's policy)")
    if getattr(args, "demo", None) and not tcp:
        parser.error("--demo makes TCP connections: it needs a --tcp-port")
    if target == "agent" and not args.agent:
        parser.error("give --agent PATH\\TO\\winsock-agent.exe (or env WFP_AGENT_EXE): the proxy's Winsock "
                     "calls run in that program, started as a child process")
    addresses = tuple(dict.fromkeys(args.addresses)) if args.addresses else ("127.0.0.1", "::1")
    return ProxyConfig(tcp_port=tcp, udp_port=udp, addresses=addresses, set_records=not args.no_set_records,
                       register_policy=args.register_policy, stats_interval=args.stats_interval,
                       name=getattr(args, "name", DEFAULT_SERVICE_NAME))


def proxy_argv(config: ProxyConfig, log: str | None, verbose: bool = False, agent: str | None = None) -> list[str]:
    """The proxy options that reproduce ``config`` (what `install` puts on the service's command line)."""
    out = ["--agent", agent] if agent else []
    if config.tcp_port:
        out += ["--tcp-port", str(config.tcp_port)]
    if config.udp_port:
        out += ["--udp-port", str(config.udp_port)]
    for address in config.addresses:
        out += ["--address", address]
    if not config.set_records:
        out.append("--no-set-records")
    if config.register_policy:
        out.append("--register-policy")
    out += ["--stats-interval", f"{config.stats_interval:g}"]
    if log:
        out += ["--log", log]
    if verbose:
        out.append("--verbose")
    return out


# --- the install plan ---------------------------------------------------------------------
@dataclass(frozen=True)
class InstallPlan:
    service_name: str
    display_name: str
    description: str
    command_line: str            # lpBinaryPathName: "<python.exe>" -m harness.proxy_service service ...
    start_type: int              # SERVICE_DEMAND_START / SERVICE_AUTO_START
    dependencies: tuple          # services the SCM starts first
    environment: tuple           # the service key's Environment value (REG_MULTI_SZ "NAME=value")
    log: str

    @property
    def service_key(self) -> str:
        return f"HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\{self.service_name}"


def service_interpreter(executable: str, base_executable: str, prefix: str, base_prefix: str):
    """(python.exe the SCM should start, extra import paths).

    A venv's Scripts\\python.exe is a launcher that runs the base interpreter as
    a *child* process; the SCM would be talking to the launcher and the child's
    StartServiceCtrlDispatcherW would fail (ERROR_FAILED_SERVICE_CONTROLLER_CONNECT).
    So a venv installs the base interpreter, with the venv's site-packages on
    PYTHONPATH.
    """
    if prefix != base_prefix and base_executable:
        return base_executable, [ntpath.join(prefix, "Lib", "site-packages")]
    return executable, []


def plan_install(args, config: ProxyConfig, *, executable: str, base_executable: str, prefix: str,
                 base_prefix: str, package_root: str, program_data: str) -> InstallPlan:
    """What `install` creates. The service runs the very package the installer ran
    (PYTHONPATH = the directory holding ``harness``), logs to --log or to
    ``%ProgramData%\\WfpRedirectProxy\\<name>.log``, and with --register-policy
    depends on the driver's service, so the SCM starts the driver first."""
    python, extra = service_interpreter(executable, base_executable, prefix, base_prefix)
    log = args.log or ntpath.join(program_data, "WfpRedirectProxy", f"{args.name}.log")
    argv = ["-m", MODULE, "service", "--name", args.name, *proxy_argv(config, log, args.verbose, args.agent)]
    command_line = f'"{python}" ' + subprocess.list2cmdline(argv)
    environment = ("PYTHONPATH=" + ";".join([package_root, *extra]),)
    return InstallPlan(
        service_name=args.name, display_name=args.display_name, description=DESCRIPTION,
        command_line=command_line, start_type=START_TYPES[args.start_type],
        dependencies=(sd.SERVICE_NAME,) if config.register_policy else (),
        environment=environment, log=log)
