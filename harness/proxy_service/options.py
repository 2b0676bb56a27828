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
    install.add_argument("--account", choices=ACCOUNTS, default="auto",
                         help="auto (default): LocalSystem with only the privileges it needs when the proxy sets "
                              "records or registers (both need an administrator), else its virtual account "
                              "NT SERVICE\\<name>")

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


# --- the account and the token (pure) -------------------------------------------------------
# Which account the service runs as, and what its token keeps. What the proxy needs:
# * bind loopback ports: any account;
# * open \\.\WfpRedirectCallout: the driver creates it with SDDL_DEVOBJ_SYS_ALL_ADM_ALL
#   (driver-fixtures/wfp-redirect-callout/src/driver.c), SYSTEM and Administrators only;
# * write ProxyProcessId under the driver's Parameters key: the Services key admits
#   writes from SYSTEM and Administrators only;
# * SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS: "the caller lacks administrative rights"
#   is its WSAEACCES (docs/seed-page.md; docs/decisions.md §4;
#   https://learn.microsoft.com/en-us/windows/win32/winsock/sio-set-wfp-connection-redirect-records).
#   No page names a privilege or group short of Administrators that allows it.
# So a proxy that sets records or registers needs an Administrators token. A virtual
# account (NT SERVICE\<name>) or LocalService has "minimum privileges on the local
# computer" and is no administrator
# (https://learn.microsoft.com/en-us/windows/win32/services/localservice-account,
# https://learn.microsoft.com/en-us/windows-server/identity/ad-ds/manage/understand-service-accounts),
# so it gets WSAEACCES on every SET; LocalSystem (lpServiceStartName NULL,
# https://learn.microsoft.com/en-us/windows/win32/services/service-user-accounts) is then the
# least account that works, and everything else is taken away from its token: only the
# privileges below stay (SERVICE_REQUIRED_PRIVILEGES_INFO: "the SCM will remove the
# privileges that are not required from the process token",
# https://learn.microsoft.com/en-us/windows/win32/api/winsvc/ns-winsvc-service_required_privileges_infow),
# and the service SID is added (SERVICE_SID_TYPE_UNRESTRICTED,
# https://learn.microsoft.com/en-us/windows/win32/api/winsvc/ns-winsvc-service_sid_info) so
# ACLs can name this service alone. A proxy that neither sets records nor registers
# (--no-set-records without --register-policy: it only listens) runs as its virtual account.
ACCOUNTS = ("auto", "localsystem", "virtual")
VIRTUAL_ACCOUNT_DOMAIN = "NT SERVICE"
# None of bind/listen/accept/connect, the registry write or the device open is a privileged
# operation: access is by group membership in the object's DACL. SeChangeNotifyPrivilege is
# never removed (same page) and is listed so the multi-string is not empty.
REQUIRED_PRIVILEGES = ("SeChangeNotifyPrivilege",)
SERVICE_SID_TYPE_UNRESTRICTED = 1


def needs_administrator(config: ProxyConfig) -> str | None:
    """Why this proxy needs an Administrators token, or None."""
    if config.set_records:
        return "it sets redirect records (SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS needs an administrator)"
    if config.register_policy:
        return "--register-policy writes the driver's Parameters key and opens its device (SYSTEM and " \
               "Administrators only)"
    return None


def service_account(config: ProxyConfig, requested: str, service_name: str) -> tuple[str | None, str]:
    """(lpServiceStartName, why): None is LocalSystem. ValueError for an account that cannot work."""
    why = needs_administrator(config)
    if requested == "virtual" and why:
        raise ValueError(f"--account virtual cannot work: {why}; a virtual account is no administrator")
    if requested == "localsystem" or (requested == "auto" and why):
        return None, (f"LocalSystem, because {why}" if why else "LocalSystem, as asked") + \
            f"; privileges kept: {', '.join(REQUIRED_PRIVILEGES)}"
    return f"{VIRTUAL_ACCOUNT_DOMAIN}\\{service_name}", "its virtual account: it only listens and forwards"


# --- who may change the code the service loads (pure) -------------------------------------
# A service runs its code with its account's rights: if a non-administrator can change
# any of it (the interpreter, the standard library, a PYTHONPATH entry, site-packages,
# the harness package, the winsock-agent), that user can run code as the service.
# install refuses then. Decided by SID, never by (localized) account names: the
# security descriptor comes from GetNamedSecurityInfoW
# (https://learn.microsoft.com/en-us/windows/win32/api/aclapi/nf-aclapi-getnamedsecurityinfow)
# as raw SID and ACL bytes, parsed here. Well-known SIDs:
# https://learn.microsoft.com/en-us/windows/win32/secauthz/well-known-sids
SID_SYSTEM = "S-1-5-18"
SID_ADMINISTRATORS = "S-1-5-32-544"
SID_TRUSTED_INSTALLER = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
SID_CREATOR_OWNER, SID_CREATOR_GROUP, SID_OWNER_RIGHTS = "S-1-3-0", "S-1-3-1", "S-1-3-4"
TRUSTED_SIDS = frozenset({SID_SYSTEM, SID_ADMINISTRATORS, SID_TRUSTED_INSTALLER})
# Names for messages only (the decision is by SID).
SID_LABELS = {SID_SYSTEM: "SYSTEM", SID_ADMINISTRATORS: "Administrators", "S-1-1-0": "Everyone",
              "S-1-5-11": "Authenticated Users", "S-1-5-32-545": "Users", "S-1-5-4": "INTERACTIVE",
              "S-1-5-19": "LocalService", "S-1-5-20": "NetworkService", SID_OWNER_RIGHTS: "OWNER RIGHTS",
              "S-1-15-2-1": "ALL APPLICATION PACKAGES"}

# ACE types with the ACCESS_ALLOWED_ACE layout (header, mask, SID) that grant; winnt.h.
ACCESS_ALLOWED_ACE_TYPE, ACCESS_DENIED_ACE_TYPE = 0x0, 0x1
ACCESS_ALLOWED_CALLBACK_ACE_TYPE, ACCESS_DENIED_CALLBACK_ACE_TYPE = 0x9, 0xA
INHERIT_ONLY_ACE = 0x08
# Access rights (winnt.h): on a directory FILE_ADD_FILE = FILE_WRITE_DATA, FILE_ADD_SUBDIRECTORY
# = FILE_APPEND_DATA (a new module or .pth file is new code); DELETE_CHILD, DELETE and
# WRITE_DAC/WRITE_OWNER let a user replace what is there.
FILE_WRITE_DATA, FILE_APPEND_DATA, FILE_DELETE_CHILD = 0x2, 0x4, 0x40
DELETE, WRITE_DAC, WRITE_OWNER = 0x10000, 0x40000, 0x80000
GENERIC_ALL, GENERIC_WRITE = 0x10000000, 0x40000000
CODE_WRITE = FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_DELETE_CHILD | DELETE | WRITE_DAC | WRITE_OWNER | \
    GENERIC_ALL | GENERIC_WRITE
# On the directories above the code, what lets a user move the code's directory away and
# put another in its place (creating a new sibling alone does not).
ANCESTOR_WRITE = FILE_DELETE_CHILD | DELETE | WRITE_DAC | WRITE_OWNER | GENERIC_ALL


@dataclass(frozen=True)
class Ace:
    type: int
    flags: int
    mask: int
    sid: str


def sid_text(raw: bytes) -> str:
    """A binary SID as S-R-I-S-S... (the SID structure of winnt.h: revision, count, 6-byte
    big-endian authority, count little-endian sub-authorities)."""
    if len(raw) < 8 or len(raw) < 8 + 4 * raw[1]:
        raise ValueError(f"SID of {len(raw)} bytes is truncated")
    authority = int.from_bytes(raw[2:8], "big")
    subs = [int.from_bytes(raw[8 + 4 * i:12 + 4 * i], "little") for i in range(raw[1])]
    return "-".join(["S", str(raw[0]), str(authority), *map(str, subs)])


def parse_acl(raw: bytes) -> list[Ace]:
    """An ACL's bytes (ACL header, then each ACE_HEADER + body) as Aces. A grant in a
    layout we do not read is an error: we refuse rather than guess."""
    if len(raw) < 8:
        raise ValueError("ACL shorter than its header")
    size, count = int.from_bytes(raw[2:4], "little"), int.from_bytes(raw[4:6], "little")
    pos, out = 8, []
    for i in range(count):
        if pos + 4 > min(size, len(raw)):
            raise ValueError(f"ACE {i} runs past the ACL")
        ace_type, flags, ace_size = raw[pos], raw[pos + 1], int.from_bytes(raw[pos + 2:pos + 4], "little")
        if ace_size < 4 or pos + ace_size > min(size, len(raw)):
            raise ValueError(f"ACE {i} has a bad size {ace_size}")
        body = raw[pos + 4:pos + ace_size]
        if ace_type in (ACCESS_ALLOWED_ACE_TYPE, ACCESS_DENIED_ACE_TYPE, ACCESS_ALLOWED_CALLBACK_ACE_TYPE,
                        ACCESS_DENIED_CALLBACK_ACE_TYPE):
            out.append(Ace(ace_type, flags, int.from_bytes(body[:4], "little"), sid_text(body[4:])))
        elif not flags & INHERIT_ONLY_ACE:
            out.append(Ace(ace_type, flags, 0xFFFFFFFF, "?"))      # unknown layout: counted as a grant
        pos += ace_size
    return out


@dataclass(frozen=True)
class PathSecurity:
    """What GetNamedSecurityInfoW said about one path; dacl None is a NULL DACL (everyone, everything)."""
    path: str
    role: str                  # "the interpreter", "PYTHONPATH entry", ... or "above <role>"
    owner: str | None          # SID text, None if the path does not exist
    dacl: tuple | None = ()
    ancestor: bool = False


def _who(sid: str) -> str:
    return f"{SID_LABELS[sid]} ({sid})" if sid in SID_LABELS else sid


def writers(entry: PathSecurity, trusted: frozenset) -> list[str]:
    """Who other than ``trusted`` may change ``entry`` (empty: nobody)."""
    if entry.owner is None:
        return ["anyone allowed to create it (it does not exist)"]
    if entry.dacl is None:
        return ["everyone (no DACL)"]
    rights = ANCESTOR_WRITE if entry.ancestor else CODE_WRITE
    found = [] if entry.owner in trusted else [f"its owner {_who(entry.owner)}"]
    for ace in entry.dacl:
        if ace.type not in (ACCESS_ALLOWED_ACE_TYPE, ACCESS_ALLOWED_CALLBACK_ACE_TYPE) and ace.sid != "?":
            continue            # deny ACEs are not credited: a grant refuses whatever precedes it
        if ace.flags & INHERIT_ONLY_ACE or ace.sid in (SID_CREATOR_OWNER, SID_CREATOR_GROUP):
            continue            # applies to children only (they are checked themselves)
        sid = entry.owner if ace.sid == SID_OWNER_RIGHTS else ace.sid
        if ace.mask & rights and sid not in trusted:
            found.append(_who(ace.sid) if ace.sid != "?" else f"an ACE of type {ace.type:#x} we do not read")
    return list(dict.fromkeys(found))


def code_paths(plan: "InstallPlan", package_dir: str, package_files=()) -> list[tuple[str, str]]:
    """(path, role) for everything the service loads code from, in the order they are loaded."""
    out = [(plan.python, "the interpreter"), (ntpath.dirname(plan.python), "the interpreter's directory"),
           (ntpath.join(plan.base_prefix, "Lib"), "the standard library"),
           (ntpath.join(plan.base_prefix, "DLLs"), "the interpreter's extension modules")]
    out += [(p, "a PYTHONPATH entry") for p in plan.python_path]
    out += [(package_dir, "the harness package")] + [(f, "a harness module") for f in package_files]
    if plan.agent:
        out.append((plan.agent, "the winsock-agent"))
    return list(dict.fromkeys(out))


def ancestors(path: str) -> list[str]:
    out, parent = [], ntpath.dirname(path)
    while parent and parent != path:
        out.append(parent)
        path, parent = parent, ntpath.dirname(parent)
    return out


def audit(entries, trusted=TRUSTED_SIDS) -> list[str]:
    """One line per path a non-administrator may change: '<path> (<role>): writable by <who>'."""
    problems = []
    for entry in entries:
        who = writers(entry, frozenset(trusted))
        if who:
            problems.append(f"{entry.path} ({entry.role}): writable by {', '.join(who)}")
    return problems


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
    python: str = ""             # the interpreter the SCM starts
    python_path: tuple = ()      # the PYTHONPATH entries
    base_prefix: str = ""        # where the interpreter's Lib and DLLs are
    agent: str = ""              # the winsock-agent the proxy starts
    account: str | None = None   # lpServiceStartName: None is LocalSystem
    account_why: str = ""
    required_privileges: tuple = REQUIRED_PRIVILEGES
    sid_type: int = SERVICE_SID_TYPE_UNRESTRICTED

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
    if not args.agent or not ntpath.isabs(args.agent):
        raise ValueError(f"--agent must be the absolute path of winsock-agent.exe, not {args.agent!r}")
    account, why = service_account(config, args.account, args.name)
    log = args.log or ntpath.join(program_data, "WfpRedirectProxy", f"{args.name}.log")
    argv = ["-m", MODULE, "service", "--name", args.name, *proxy_argv(config, log, args.verbose, args.agent)]
    command_line = f'"{python}" ' + subprocess.list2cmdline(argv)
    python_path = (package_root, *extra)
    environment = ("PYTHONPATH=" + ";".join(python_path),)
    return InstallPlan(
        service_name=args.name, display_name=args.display_name, description=DESCRIPTION,
        command_line=command_line, start_type=START_TYPES[args.start_type],
        dependencies=(sd.SERVICE_NAME,) if config.register_policy else (),
        environment=environment, log=log, python=python, python_path=python_path, base_prefix=base_prefix,
        agent=args.agent,
        account=account, account_why=why)
