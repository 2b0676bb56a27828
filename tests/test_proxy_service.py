"""The packaged proxy (harness.proxy_service), checked on Linux.

(a) the command line and the install plan;
(b) the service state machine: the SetServiceStatus sequence for start, stop
    and failed starts, with the real proxy on the simulator and a recording
    fake of only our own status-reporting function;
(c) the policy update plan, from .reg text, through sample_driver;
(d) the ctypes prototypes, structures and constants against mingw-w64's headers;
(e) the ctypes service and registry adapters, driven through their real
    prototypes by Python stand-ins for advapi32/kernel32 (no SCM on Linux);
(f) `run --target sim --demo 5` in a subprocess; imports touch no Windows
    library; the Windows commands say Windows is required.
The real-Winsock target (the winsock-agent as the proxy's child) runs under
wine64 in tests/agent/test_proxy_service_wine.py.
"""
from __future__ import annotations

import ast
import ctypes
import os
import re
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.proxy_service import core, options, targets, win32
from harness.proxy_service.cli import main
from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.proxy import redirect as rd
from support.mingw import needs_cc, syntax_check
from harness import sample_driver as sd

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harness" / "proxy_service"
not_windows = pytest.mark.skipif(sys.platform == "win32", reason="checks the non-Windows behaviour")

# The example of driver-fixtures/wfp-redirect-callout/POLICY.md.
POLICY_MD_REG = "\r\n".join([  # noqa: FLY002 - one line per .reg line
    "Windows Registry Editor Version 5.00", "",
    r"[HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\WfpRedirectCallout\Parameters]",
    '"PolicyVersion"=dword:00000001',
    '"Enabled"=dword:00000001',
    '"TcpPorts"=hex(7):38,00,30,00,00,00,34,00,34,00,33,00,00,00,00,00',
    '"UdpPorts"=hex(7):35,00,33,00,00,00,00,00',
    '"TcpProxyPort"=dword:00003a99',
    '"UdpProxyPort"=dword:00003acd',
    '"ProxyProcessId"=dword:00001092',
    '"ExcludedProcessIds"=hex(7):00,00', ""])


AGENT = r"C:\wfp\winsock-agent.exe"


def run_module(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "harness.proxy_service", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


# --- (a) command line ------------------------------------------------------------------

def test_run_arguments_become_the_proxy_config():
    args, cfg = options.parse(["run", "--tcp-port", "9000", "--udp-port", "9053", "--address", "127.0.0.1",
                               "--address", "::1", "--address", "127.0.0.1", "--no-set-records",
                               "--register-policy", "--log", "x.log", "--stats-interval", "2.5", "--agent", AGENT])
    assert args.command == "run" and args.target == "agent" and args.log == "x.log" and args.agent == AGENT
    assert cfg == core.ProxyConfig(tcp_port=9000, udp_port=9053, addresses=("127.0.0.1", "::1"),
                                   set_records=False, register_policy=True, stats_interval=2.5,
                                   name=options.DEFAULT_SERVICE_NAME)
    _, cfg = options.parse(["run", "--udp-port", "53", "--target", "wine"])
    assert (cfg.tcp_port, cfg.udp_port, cfg.addresses, cfg.set_records, cfg.register_policy) == \
        (0, 53, ("127.0.0.1", "::1"), True, False)
    _, cfg = options.parse(["run", "--target", "sim", "--demo", "3"])
    assert (cfg.tcp_port, cfg.udp_port) == options.SIM_DEFAULT_PORTS


@pytest.mark.parametrize("argv, message", [
    (["run"], "give --tcp-port and/or --udp-port"),
    (["run", "--tcp-port", "0"], "give --tcp-port and/or --udp-port"),
    (["run", "--tcp-port", "70000"], "port 70000 is out of range"),
    (["run", "--tcp-port", "http"], "'http' is not a port number"),
    (["run", "--tcp-port", "9000", "--address", "localhost"], "'localhost' is not an IPv4 or IPv6 address"),
    (["run", "--tcp-port", "9000", "--demo", "5"], "--demo needs --target sim"),
    (["run", "--target", "sim", "--demo", "0"], "0 must be greater than 0"),
    (["run", "--target", "sim", "--udp-port", "53", "--demo", "2"], "--demo makes TCP connections"),
    (["run", "--tcp-port", "9000", "--stats-interval", "-1"], "-1 must be greater than 0"),
    (["run", "--tcp-port", "9000", "--target", "vm"], "invalid choice: 'vm'"),
    (["install", "--tcp-port", "9000", "--name", "a\\b"], "is not a valid service name"),
    (["service"], "give --tcp-port and/or --udp-port"),
    (["run", "--tcp-port", "9000"], "give --agent PATH\\TO\\winsock-agent.exe"),
    (["service", "--tcp-port", "9000"], "give --agent PATH\\TO\\winsock-agent.exe"),
    ([], "required: COMMAND"),
])
def test_usage_errors_exit_2_naming_the_problem(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("WFP_AGENT_EXE", raising=False)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def _argv_of(command_line: str) -> list[str]:
    """CommandLineToArgvW's rules (what python.exe uses to rebuild sys.argv)."""
    out, cur, quoted, i, have = [], "", False, 0, False
    while i < len(command_line):
        ch = command_line[i]
        if ch == "\\":
            n = len(command_line[i:]) - len(command_line[i:].lstrip("\\"))
            if i + n < len(command_line) and command_line[i + n] == '"':
                cur += "\\" * (n // 2)
                if n % 2:
                    cur += '"'
                    i += n + 1
                else:
                    i += n
                have = True
                continue
            cur += "\\" * n
            i += n
            have = True
            continue
        if ch == '"':
            quoted = not quoted
            have = True
        elif ch in " \t" and not quoted:
            if have:
                out.append(cur)
            cur, have = "", False
        else:
            cur += ch
            have = True
        i += 1
    if have:
        out.append(cur)
    return out


def test_install_plan_runs_the_same_options_as_a_service():
    argv = ["install", "--tcp-port", "9000", "--udp-port", "9053", "--register-policy", "--start-type", "auto",
            "--address", "127.0.0.1", "--agent", AGENT]
    args, cfg = options.parse(argv)
    plan = options.plan_install(args, cfg, executable=r"C:\Program Files\Python311\python.exe",
                                base_executable=r"C:\Program Files\Python311\python.exe",
                                prefix=r"C:\Program Files\Python311", base_prefix=r"C:\Program Files\Python311",
                                package_root=r"C:\harness src", program_data=r"C:\ProgramData")
    assert plan.command_line == (
        r'"C:\Program Files\Python311\python.exe" -m harness.proxy_service service --name WfpRedirectProxy '
        r'--agent C:\wfp\winsock-agent.exe --tcp-port 9000 --udp-port 9053 --address 127.0.0.1 --register-policy --stats-interval 60 '
        r'--log C:\ProgramData\WfpRedirectProxy\WfpRedirectProxy.log')
    assert plan.start_type == 2 and plan.dependencies == ("WfpRedirectCallout",)
    assert plan.environment == (r"PYTHONPATH=C:\harness src",)
    assert plan.service_key == r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\WfpRedirectProxy"
    # What the SCM starts parses back to the very same proxy configuration.
    words = _argv_of(plan.command_line)
    assert words[0] == r"C:\Program Files\Python311\python.exe" and words[1:3] == ["-m", "harness.proxy_service"]
    sargs, scfg = options.parse(words[3:])
    assert sargs.command == "service" and sargs.name == "WfpRedirectProxy" and scfg == cfg and sargs.agent == AGENT
    assert sargs.log == plan.log


def test_install_plan_in_a_venv_starts_the_base_interpreter_with_the_venv_on_the_path():
    args, cfg = options.parse(["install", "--tcp-port", "9000", "--name", "Proxy2", "--log", r"D:\logs\p.log",
                               "--agent", AGENT])
    plan = options.plan_install(args, cfg, executable=r"C:\venv\Scripts\python.exe",
                                base_executable=r"C:\Python311\python.exe", prefix=r"C:\venv",
                                base_prefix=r"C:\Python311", package_root=r"C:\src", program_data=r"C:\ProgramData")
    words = _argv_of(plan.command_line)
    assert words[0] == r"C:\Python311\python.exe"
    assert plan.environment == (r"PYTHONPATH=C:\src;C:\venv\Lib\site-packages",)
    assert plan.start_type == 3 and plan.dependencies == ()          # demand start, no --register-policy
    assert options.parse(words[3:])[1] == cfg and _argv_of(plan.command_line)[-1] == r"D:\logs\p.log"


# --- (b) the service state machine ----------------------------------------------------------

class Recorder:
    """A recording fake of our own status-reporting function (win32.status_reporter's role)."""

    def __init__(self, probe=lambda: None):
        self.statuses: list[core.ServiceStatus] = []
        self.probes = []
        self.probe = probe

    def __call__(self, status):
        self.statuses.append(status)
        self.probes.append(self.probe())

    @property
    def sequence(self):
        return [(s.state, s.dwCheckPoint) for s in self.statuses]


class ScmStopsAfterDemo(targets.SimTarget):
    """The sim target; when its demo app is done, the 'SCM' sends SERVICE_CONTROL_STOP."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.machine = None
        self.replies = []

    def idle(self, api, ms):
        super().idle(api, ms)
        if self.stop.is_set() and not self.replies:
            self.replies.append(self.machine.handle_control(core.SERVICE_CONTROL_STOP))


def test_service_start_and_stop_report_the_documented_sequence():
    cfg = core.ProxyConfig(tcp_port=9000, udp_port=9053, register_policy=True)
    target = ScmStopsAfterDemo(cfg, demo=3, realtime=False)
    report = Recorder(lambda: (target.callout.policy.proxy_process_id if target.callout else None,
                               target.proxy is not None and bool(target.proxy.listeners)))
    machine = core.ServiceStatusMachine(report)
    target.machine = machine
    code = core.run_service(machine, lambda progress: core.ProxySession(target, cfg, progress=progress))
    assert code == core.EXIT_OK
    assert report.sequence == [("START_PENDING", 1), ("START_PENDING", 2), ("START_PENDING", 3),
                               ("RUNNING", 0), ("STOP_PENDING", 1), ("STOP_PENDING", 2), ("STOPPED", 0)]
    st = report.statuses
    assert all(s.dwServiceType == core.SERVICE_WIN32_OWN_PROCESS for s in st)
    assert [s.dwControlsAccepted for s in st] == [0, 0, 0, core.SERVICE_ACCEPT_STOP | core.SERVICE_ACCEPT_SHUTDOWN,
                                                  0, 0, 0]
    assert [s.dwWaitHint > 0 for s in st] == [True, True, True, False, True, True, False]
    assert (st[-1].dwWin32ExitCode, st[-1].dwServiceSpecificExitCode) == (0, 0)
    assert target.replies == [core.NO_ERROR]
    pid = target.api.GetCurrentProcessId()
    # RUNNING only once registered with the driver; STOPPED only after ProxyProcessId=0 and sockets closed.
    assert report.probes[3] == (pid, True)
    assert report.probes[-1] == (0, False)
    assert target.demo.intact == 3 and target.callout.redirected == 3


def test_controls_the_service_does_not_take_and_nothing_after_stopped():
    report = Recorder()
    machine = core.ServiceStatusMachine(report)
    machine.start_pending()
    assert machine.handle_control(core.SERVICE_CONTROL_INTERROGATE) == core.NO_ERROR
    assert machine.handle_control(2) == core.ERROR_CALL_NOT_IMPLEMENTED            # SERVICE_CONTROL_PAUSE
    machine.running()
    assert machine.handle_control(core.SERVICE_CONTROL_SHUTDOWN) == core.NO_ERROR
    assert machine.stop_event.is_set()
    machine.stopped()
    machine.stopped(5)
    assert machine.handle_control(core.SERVICE_CONTROL_STOP) == core.NO_ERROR
    machine.stop_pending()
    assert report.sequence == [("START_PENDING", 1), ("RUNNING", 0), ("STOP_PENDING", 1), ("STOPPED", 0)]
    with pytest.raises(RuntimeError):
        machine.start_pending()


def _squat(target, port):
    """Another process of the simulated host listens on 127.0.0.1:port first."""
    other = target.world.start_process(target.client_host, "squatter")
    sc = rd.Scratch(other, 256)
    s = other.socket(C.AF_INET, C.SOCK_STREAM, 0)
    name = sockaddr.from_text("127.0.0.1", port)
    other.memory.write(sc.addr, name)
    assert other.bind(s, sc.addr, len(name)) == 0 and other.listen(s, 5) == 0


def test_service_start_failure_port_in_use_reports_stopped_with_the_winsock_error():
    cfg = core.ProxyConfig(tcp_port=9000)
    target = targets.SimTarget(cfg, realtime=False)
    _squat(target, 9000)
    report = Recorder()
    code = core.run_service(core.ServiceStatusMachine(report),
                            lambda progress: core.ProxySession(target, cfg, progress=progress))
    assert code == core.EXIT_STARTUP
    assert report.sequence == [("START_PENDING", 1), ("STOPPED", 0)]
    assert (report.statuses[-1].dwWin32ExitCode, report.statuses[-1].dwServiceSpecificExitCode) == \
        (C.WSAEADDRINUSE, 0)
    assert report.statuses[-1].dwControlsAccepted == 0


def test_service_start_failure_policy_refused_closes_the_listeners_first():
    cfg = core.ProxyConfig(tcp_port=9000, register_policy=True)
    target = targets.SimTarget(cfg, realtime=False)
    sockets = []

    def probe():
        return None if target.proxy is None else len(target.proxy.listeners)

    report = Recorder(probe)

    def session(progress):
        s = core.ProxySession(target, cfg, progress=progress)
        sockets.append(s)
        return s

    original_open = target.open_api

    def open_with_admin_change():
        api = original_open()
        target.registry[sd.VALUE_TCP_PROXY_PORT] = (sd.REG_DWORD, struct.pack("<I", 15001))
        return api
    target.open_api = open_with_admin_change
    code = core.run_service(core.ServiceStatusMachine(report), session)
    assert code == core.EXIT_STARTUP
    assert report.sequence == [("START_PENDING", 1), ("START_PENDING", 2), ("STOPPED", 0)]
    assert report.statuses[-1].dwWin32ExitCode == core.ERROR_INVALID_PARAMETER
    assert report.probes[-1] == 0                                    # listeners closed before STOPPED
    assert target.callout.generation == 1                            # never reloaded
    # A failure that has no Win32 code: ERROR_SERVICE_SPECIFIC_ERROR and the command's exit code.
    assert core.exit_codes(core.StartupError("x")) == (core.ERROR_SERVICE_SPECIFIC_ERROR, core.EXIT_STARTUP)
    assert core.exit_codes(ValueError("x")) == (core.ERROR_SERVICE_SPECIFIC_ERROR, core.EXIT_RUNTIME)


def test_service_loop_failure_reports_stop_pending_then_stopped_with_a_specific_error():
    cfg = core.ProxyConfig(tcp_port=9000)

    class Broken(targets.SimTarget):
        def idle(self, api, ms):
            raise RuntimeError("simulated loop failure")

    target = Broken(cfg, realtime=False)
    report = Recorder()
    code = core.run_service(core.ServiceStatusMachine(report),
                            lambda progress: core.ProxySession(target, cfg, progress=progress))
    assert code == core.EXIT_RUNTIME
    assert report.sequence == [("START_PENDING", 1), ("START_PENDING", 2), ("RUNNING", 0), ("STOP_PENDING", 1),
                               ("STOPPED", 0)]
    last = report.statuses[-1]
    assert (last.dwWin32ExitCode, last.dwServiceSpecificExitCode) == (core.ERROR_SERVICE_SPECIFIC_ERROR,
                                                                     core.EXIT_RUNTIME)


# --- (c) the policy update plan --------------------------------------------------------------

def _apply(values, plan):
    out = dict(values)
    out.update(plan.writes)
    return out


def test_registration_plan_from_the_policy_md_example():
    values = sd.parse_reg(POLICY_MD_REG)
    plan = core.plan_registration(values, 777, tcp_port=15001, udp_port=15053)
    old = sd.RedirectPolicy.from_reg(POLICY_MD_REG)
    assert plan.old == old and old.proxy_process_id == 4242
    assert plan.new == old.with_proxy_process_id(777)
    # Only ProxyProcessId is written, as the 4 bytes RegSetValueExW gets.
    assert plan.writes == {"ProxyProcessId": (sd.REG_DWORD, struct.pack("<I", 777))}
    after = _apply(values, plan)
    assert sd.parse_registry_values(after) == plan.new
    assert sd.render_reg(after) == old.to_reg().replace("dword:00001092", "dword:00000309")
    assert plan.expected == {"proxy_process_id": 777, "tcp_port_count": 2, "udp_port_count": 1}
    assert plan.warnings == ("replacing ProxyProcessId=4242 (another proxy, or a stale PID)",)
    good = sd.RELOAD_RESULT.unpack(sd.RELOAD_RESULT.pack(generation=7, proxy_process_id=777, tcp_port_count=2,
                                                         udp_port_count=1))
    assert core.decode_reload_result(sd.RELOAD_RESULT.pack(generation=7, proxy_process_id=777, tcp_port_count=2,
                                                           udp_port_count=1)) == good
    assert plan.check(good) == []
    assert plan.check({**good, "proxy_process_id": 4242}) == ["proxy_process_id=4242 (expected 777)"]
    with pytest.raises(core.PolicyRefused, match="returned 8 bytes, expected 16"):
        core.decode_reload_result(bytes(8))


def test_registration_plan_reads_raw_registry_bytes_like_regqueryvalueexw_returns():
    values = {name: (regtype, core.encode_value(regtype, value))
              for name, (regtype, value) in sd.parse_reg(POLICY_MD_REG).items()}
    assert all(isinstance(raw, bytes) for _, raw in values.values())
    plan = core.plan_registration(values, 777, tcp_port=15001, udp_port=15053)
    assert plan.old == sd.RedirectPolicy.from_reg(POLICY_MD_REG)


def test_registration_refuses_a_policy_that_points_elsewhere_or_is_invalid():
    values = sd.parse_reg(POLICY_MD_REG)
    with pytest.raises(core.PolicyRefused, match=r"TCP ports 80,443 to TcpProxyPort=15001 but this proxy "
                                                 r"listens on TCP 9000"):
        core.plan_registration(values, 777, tcp_port=9000, udp_port=15053)
    with pytest.raises(core.PolicyRefused, match=r"UdpProxyPort=15053 but this proxy does not listen on UDP"):
        core.plan_registration(values, 777, tcp_port=15001)
    bad = {**values, "TcpProxyPort": (sd.REG_DWORD, 70000)}
    with pytest.raises(core.PolicyRefused, match=r"invalid \(TcpProxyPort: port 70000 is out of range") as info:
        core.plan_registration(bad, 777, tcp_port=15001, udp_port=15053)
    assert info.value.win32_error == core.ERROR_INVALID_PARAMETER
    disabled = {**values, "Enabled": (sd.REG_DWORD, 0)}
    plan = core.plan_registration(disabled, 4242, tcp_port=15001, udp_port=15053)
    assert plan.warnings == ("the policy is disabled (Enabled=0): nothing will be redirected",)


def test_unregistration_writes_zero_only_while_the_pid_is_ours():
    values = sd.parse_reg(POLICY_MD_REG)
    plan = core.plan_unregistration(values, 4242)
    assert plan.writes == {"ProxyProcessId": (sd.REG_DWORD, bytes(4))}
    assert sd.parse_registry_values(_apply(values, plan)).proxy_process_id == 0
    assert plan.expected["proxy_process_id"] == 0
    assert core.plan_unregistration(values, 777) is None


def test_sim_driver_refuses_an_invalid_reload_and_keeps_the_previous_policy():
    cfg = core.ProxyConfig(tcp_port=9000, register_policy=True)
    target = targets.SimTarget(cfg, realtime=False)
    target.open_api()
    store = target.policy_store()
    before = target.callout.policy
    store.write_value("TcpPorts", sd.REG_SZ, "80\0".encode("utf-16-le"))
    with pytest.raises(core.PolicyRefused, match="TcpPorts: expected REG_MULTI_SZ, got REG_SZ") as info:
        store.reload()
    assert info.value.win32_error == core.ERROR_INVALID_PARAMETER
    assert target.callout.policy is before and target.callout.generation == 1


# --- (d) prototypes against the mingw-w64 headers ------------------------------------------------

PRELUDE = """#include <windows.h>
#include <winsvc.h>
#include <aclapi.h>
#include <stddef.h>
#define PS_IS_PTR(T) (__builtin_classify_type((T)0) == 5)
#define PS_SIGNED(T) (PS_IS_PTR(T) ? 0 : ((T)-1 < (T)0))
"""


def _is_pointer_ctype(t) -> bool:
    return t in (ctypes.c_void_p, ctypes.c_wchar_p, ctypes.c_char_p) or \
        (isinstance(t, type) and issubclass(t, ctypes._CFuncPtr))


def _int_width(t):
    return ctypes.sizeof(t) * 8, t(-1).value < 0


def _type_asserts(spelling, t, who, emit):
    if t is None:
        return
    if _is_pointer_ctype(t):
        emit(f'_Static_assert(PS_IS_PTR({spelling}) && sizeof({spelling}) == {ctypes.sizeof(t)}, '
             f'"{who}: {spelling} is a pointer like ctypes {t.__name__}");', who)
    else:
        bits, signed = _int_width(t)
        emit(f'_Static_assert(!PS_IS_PTR({spelling}) && sizeof({spelling}) * 8 == {bits} && PS_SIGNED({spelling}) '
             f'== {int(signed)}, "{who}: {spelling} is ({bits}, {signed}) like ctypes {t.__name__}");', who)


def _spelled(prototypes):
    """name -> (ret spelling, restype, [(spelling, argtype, param)]): spellings from the table,
    ctypes types from the function types win32 really builds."""
    out = {}
    for name, (_dll, ret, params) in prototypes.items():
        ftype = win32.FUNCTION_TYPES.get(name)
        restype = ftype._restype_ if ftype is not None else win32.SPELLING_CTYPES[ret]
        argtypes = ftype._argtypes_ if ftype is not None else tuple(win32.SPELLING_CTYPES[t] for t, _ in params)
        assert len(argtypes) == len(params), name
        out[name] = (ret, restype, [(t, a, p) for (t, p), a in zip(params, argtypes)])
    return out


def _generate(spelled, callbacks=win32.CALLBACKS, structures=win32.STRUCTURES, constants=win32.CONSTANTS):
    lines, owner = PRELUDE.splitlines(), {}

    def emit(text, who):
        lines.append(text)
        owner[len(lines)] = who

    for name, (ret, restype, params) in spelled.items():
        for spelling, t, pname in params:
            _type_asserts(spelling, t, f"{name}.{pname}", emit)
        _type_asserts(ret, restype, f"{name}.return", emit)
        emit(f"{ret} (WINAPI *ps_check_{name})({', '.join(s for s, _, _ in params) or 'void'}) = {name};", name)
    for typedef, (ftype, ret, params) in callbacks.items():
        for i, (spelling, t) in enumerate(zip(params, ftype._argtypes_)):
            _type_asserts(spelling, t, f"{typedef}.{i}", emit)
        _type_asserts(ret, ftype._restype_, f"{typedef}.return", emit)
        emit(f"{typedef} ps_check_{typedef} = ({ret} (WINAPI *)({', '.join(params)}))0;", typedef)
    for struct_ in structures:
        cname = struct_.__name__
        emit(f'_Static_assert(sizeof({cname}) == {ctypes.sizeof(struct_)}, "{cname}: size");', cname)
        for fname, _ in struct_._fields_:
            emit(f'_Static_assert(offsetof({cname}, {fname}) == {getattr(struct_, fname).offset} && '
                 f'sizeof((({cname} *)0)->{fname}) == {getattr(struct_, fname).size}, "{cname}.{fname}");',
                 f"{cname}.{fname}")
    for cname, value in constants.items():
        emit(f'_Static_assert((unsigned long long)(ULONG_PTR)({cname}) == {value:#x}ULL, "{cname}");', cname)
    return "\n".join(lines) + "\n", owner



def _errors(stderr, filename, owner):
    found = {}
    for m in re.finditer(rf"^{re.escape(filename)}:(\d+):\d+: error: (.*)$", stderr, re.MULTILINE):
        found.setdefault(owner.get(int(m.group(1)), f"line {m.group(1)}"), []).append(m.group(2))
    return found


def test_every_function_type_is_built_from_its_spelled_prototype():
    for name, (dll, ret, params) in win32.PROTOTYPES.items():
        assert dll in ("advapi32", "kernel32"), name
        ftype = win32.FUNCTION_TYPES[name]
        assert ftype._restype_ is win32.SPELLING_CTYPES[ret], name
        assert ftype._argtypes_ == tuple(win32.SPELLING_CTYPES[t] for t, _ in params), name
        assert ftype._flags_ & ctypes._FUNCFLAG_USE_LASTERROR, f"{name}: built without use_last_error"


@needs_cc
def test_prototypes_structures_and_constants_match_the_mingw_headers(tmp_path):
    source, owner = _generate(_spelled(win32.PROTOTYPES))
    proc = syntax_check(tmp_path, "proxy_service.c", source)
    assert proc.returncode == 0, (f"differs from the headers: {_errors(proc.stderr, 'proxy_service.c', owner)}"
                                  f"\n{proc.stderr[-6000:]}")
    checked = set(owner.values())
    assert set(win32.PROTOTYPES) | set(win32.CALLBACKS) | set(win32.CONSTANTS) <= checked
    assert {"SERVICE_STATUS.dwWaitHint", "SERVICE_TABLE_ENTRYW.lpServiceProc"} <= checked


@needs_cc
def test_header_check_catches_drift(tmp_path):
    protos = dict(win32.PROTOTYPES)
    dll, ret, params = protos["RegSetValueExW"]
    protos["RegSetValueExW"] = (dll, ret, tuple(("LPBYTE", p) if p == "lpData" else (t, p) for t, p in params))
    spelled = _spelled(protos)
    ret, restype, params = spelled["DeviceIoControl"]
    spelled["DeviceIoControl"] = (ret, restype, [params[0], ("DWORD", ctypes.c_int32, "dwIoControlCode"),
                                                 *params[2:]])
    ret, restype, params = spelled["SetServiceStatus"]
    spelled["SetServiceStatus"] = (ret, restype, params[:1])
    callbacks = dict(win32.CALLBACKS)
    callbacks["PHANDLER_ROUTINE"] = (win32.HANDLER_ROUTINE, "WINBOOL", ("DWORD", "DWORD"))

    class SERVICE_STATUS(ctypes.Structure):
        _fields_ = [("dwServiceType", ctypes.c_uint32), ("dwCurrentState", ctypes.c_uint16)]

    source, owner = _generate(spelled, callbacks, (SERVICE_STATUS,),
                              {**win32.CONSTANTS, "HKEY_LOCAL_MACHINE": 0x80000002})
    proc = syntax_check(tmp_path, "drift.c", source)
    errors = _errors(proc.stderr, "drift.c", owner)
    assert set(errors) == {"RegSetValueExW", "DeviceIoControl.dwIoControlCode", "SetServiceStatus",
                           "PHANDLER_ROUTINE", "SERVICE_STATUS", "SERVICE_STATUS.dwCurrentState",
                           "HKEY_LOCAL_MACHINE"}, proc.stderr[-6000:]


# --- (e) the ctypes adapters through their prototypes ----------------------------------------------

class FakeWindows:
    """Python stand-ins for the advapi32/kernel32 entry points, bound with win32.FUNCTION_TYPES
    (so every argument crosses ctypes as it would to the DLL). The registry and the device
    front a SimTarget's simulated driver; the SCM runs ServiceMain on its own thread and
    sends STOP once the service reports RUNNING."""

    def __init__(self, sim_target=None):
        self.sim = sim_target
        self.calls = []
        self.statuses = []
        self.last_error = 0
        self.handler = None
        self.thread = None
        self.control_replies = []
        impl = {name: getattr(self, name) for name in win32.PROTOTYPES if hasattr(self, name)}
        self._keep = {name: win32.FUNCTION_TYPES[name](fn) for name, fn in impl.items()}
        fns = {name: self._keep.get(name) or win32.FUNCTION_TYPES[name](self._unexpected(name))
               for name in win32.PROTOTYPES}
        self.fns = win32.Functions(fns)
        self.fns.last_error = lambda: self.last_error

    def _unexpected(self, name):
        def fn(*args):
            raise AssertionError(f"{name} called")
        return fn

    # registry: the simulated driver's Parameters key
    def RegOpenKeyExW(self, hkey, subkey, options, sam, phk):
        self.calls.append(("RegOpenKeyExW", hkey, subkey, sam))
        ctypes.c_void_p.from_address(phk).value = 0x1234
        return 0

    def RegQueryValueExW(self, hkey, name, reserved, ptype, data, pcb):
        self.calls.append(("RegQueryValueExW", name))
        got = self.sim.policy_store().read_values().get(name)
        if got is None:
            return win32.ERROR_FILE_NOT_FOUND
        regtype, raw = got
        size = ctypes.c_uint32.from_address(pcb)
        ctypes.c_uint32.from_address(ptype).value = regtype
        if not data:                                   # the size query
            size.value = len(raw)
            return 0
        if size.value < len(raw):
            size.value = len(raw)
            return win32.ERROR_MORE_DATA
        ctypes.memmove(data, raw, len(raw))
        size.value = len(raw)
        return 0

    def RegSetValueExW(self, hkey, name, reserved, regtype, data, cb):
        self.calls.append(("RegSetValueExW", name, regtype, ctypes.string_at(data, cb)))
        self.sim.policy_store().write_value(name, regtype, ctypes.string_at(data, cb))
        return 0

    def RegCloseKey(self, hkey):
        self.calls.append(("RegCloseKey", hkey))
        return 0

    def CreateFileW(self, path, access, share, sa, disposition, flags, template):
        self.calls.append(("CreateFileW", path, access, disposition))
        return 0x88

    def DeviceIoControl(self, h, code, inbuf, insize, outbuf, outsize, returned, overlapped):
        self.calls.append(("DeviceIoControl", h, code, outsize))
        try:
            raw = self.sim.policy_store().reload()
        except core.PolicyRefused:
            self.last_error = win32.ERROR_INVALID_PARAMETER
            return 0
        ctypes.memmove(outbuf, raw, len(raw))
        ctypes.c_uint32.from_address(returned).value = len(raw)
        return 1

    def CloseHandle(self, h):
        self.calls.append(("CloseHandle", h))
        return 1

    # the SCM
    def StartServiceCtrlDispatcherW(self, table):
        entry = win32.SERVICE_TABLE_ENTRYW.from_address(table)
        end = win32.SERVICE_TABLE_ENTRYW.from_address(table + ctypes.sizeof(win32.SERVICE_TABLE_ENTRYW))
        self.calls.append(("StartServiceCtrlDispatcherW", entry.lpServiceName, end.lpServiceName))
        main_fn = ctypes.cast(entry.lpServiceProc, win32.SERVICE_MAIN_FUNCTION)
        self.thread = threading.Thread(target=main_fn, args=(0, None))
        self.thread.start()
        self.thread.join(120)
        return 1

    def RegisterServiceCtrlHandlerExW(self, name, handler, context):
        self.calls.append(("RegisterServiceCtrlHandlerExW", name))
        self.handler = ctypes.cast(handler, win32.HANDLER_FUNCTION_EX)
        return 0x5150

    def SetServiceStatus(self, handle, pstatus):
        s = win32.SERVICE_STATUS.from_address(pstatus)
        self.statuses.append((handle, s.dwServiceType, s.dwCurrentState, s.dwControlsAccepted, s.dwWin32ExitCode,
                              s.dwServiceSpecificExitCode, s.dwCheckPoint, s.dwWaitHint))
        if s.dwCurrentState == core.SERVICE_RUNNING:
            threading.Thread(target=lambda: self.control_replies.append(
                self.handler(core.SERVICE_CONTROL_STOP, 0, None, None))).start()
        return 1


def test_driver_policy_store_registers_through_the_registry_and_the_reload_ioctl():
    cfg = core.ProxyConfig(tcp_port=9000, register_policy=True)
    target = targets.SimTarget(cfg, realtime=False)
    api = target.open_api()
    fake = FakeWindows(target)
    store = win32.DriverPolicyStore(fake.fns)
    pid = api.GetCurrentProcessId()
    plan = core.plan_registration(store.read_values(), pid, tcp_port=9000)
    result = core.apply_plan(store, plan)
    store.close()
    assert result == {"generation": 2, "proxy_process_id": pid, "tcp_port_count": 1, "udp_port_count": 0}
    assert target.callout.policy.proxy_process_id == pid
    assert ("RegOpenKeyExW", win32.HKEY_LOCAL_MACHINE,
            r"SYSTEM\CurrentControlSet\Services\WfpRedirectCallout\Parameters",
            win32.KEY_QUERY_VALUE | win32.KEY_SET_VALUE | win32.KEY_WOW64_64KEY) in fake.calls
    assert ("RegSetValueExW", "ProxyProcessId", sd.REG_DWORD, struct.pack("<I", pid)) in fake.calls
    assert ("CreateFileW", r"\\.\WfpRedirectCallout", win32.GENERIC_WRITE, win32.OPEN_EXISTING) in fake.calls
    assert ("DeviceIoControl", 0x88, 0x8A57A004, 16) in fake.calls
    assert [c[0] for c in fake.calls][-2:] == ["CloseHandle", "RegCloseKey"]
    # A refused reload is one clear error naming ERROR_INVALID_PARAMETER.
    target.registry["UdpPorts"] = (sd.REG_MULTI_SZ, core.encode_value(sd.REG_MULTI_SZ, ["053"]))
    store = win32.DriverPolicyStore(fake.fns)
    with pytest.raises(core.PolicyRefused, match="refused the policy \\(ERROR_INVALID_PARAMETER\\)") as info:
        store.reload()
    assert info.value.win32_error == win32.ERROR_INVALID_PARAMETER


def test_service_host_runs_the_proxy_through_the_scm_prototypes():
    cfg = core.ProxyConfig(tcp_port=9000, register_policy=True)
    target = targets.SimTarget(cfg, demo=2, realtime=False)
    fake = FakeWindows(target)
    host = win32.ServiceHost(
        fake.fns, "WfpRedirectProxy",
        lambda machine: core.run_service(machine, lambda progress: core.ProxySession(target, cfg,
                                                                                     progress=progress)))
    assert host.dispatch() == core.EXIT_OK
    assert ("StartServiceCtrlDispatcherW", "WfpRedirectProxy", None) in fake.calls
    assert ("RegisterServiceCtrlHandlerExW", "WfpRedirectProxy") in fake.calls
    states = [(s[2], s[6]) for s in fake.statuses]
    assert states == [(2, 1), (2, 2), (2, 3), (4, 0), (3, 1), (3, 2), (1, 0)]
    assert {s[0] for s in fake.statuses} == {0x5150} and {s[1] for s in fake.statuses} == {0x10}
    assert fake.statuses[3][3] == core.SERVICE_ACCEPT_STOP | core.SERVICE_ACCEPT_SHUTDOWN
    assert fake.control_replies == [core.NO_ERROR]
    assert target.callout.policy.proxy_process_id == 0                  # unregistered at stop


def test_service_entry_not_started_by_the_scm_says_so():
    fake = FakeWindows()

    def refuse(table):
        fake.last_error = win32.ERROR_FAILED_SERVICE_CONTROLLER_CONNECT
        return 0
    fake.fns.StartServiceCtrlDispatcherW = win32.FUNCTION_TYPES["StartServiceCtrlDispatcherW"](refuse)
    host = win32.ServiceHost(fake.fns, "WfpRedirectProxy", lambda machine: 0)
    with pytest.raises(core.StartupError, match="not started by the Service Control Manager") as info:
        host.dispatch()
    assert info.value.exit_code == core.EXIT_USAGE


def test_console_control_handler_sets_stop_and_is_kept_referenced():
    fake = FakeWindows()
    installed = []
    fake.fns.SetConsoleCtrlHandler = win32.FUNCTION_TYPES["SetConsoleCtrlHandler"](
        lambda routine, add: installed.append((ctypes.cast(routine, ctypes.c_void_p).value, add)) or 1)
    stop, done = threading.Event(), threading.Event()
    console = win32.ConsoleControl(fake.fns, stop, done)
    console.install()
    routine = ctypes.cast(installed[0][0], win32.HANDLER_ROUTINE)
    assert routine(win32.CTRL_BREAK_EVENT) == 1 and stop.is_set()
    console.remove()
    assert [add for _, add in installed] == [1, 0] and installed[0][0] == installed[1][0]
    assert console.events == [win32.CTRL_BREAK_EVENT]


# --- (f) the command, end to end ------------------------------------------------------------------

def test_run_target_sim_demo_forwards_every_connection():
    proc = run_module("run", "--target", "sim", "--demo", "5")
    assert proc.returncode == 0, proc.stderr
    assert "WfpRedirectProxy stats: accepted=5 forwarded=5 closed=5 refused=0" in proc.stdout
    assert "demo: 5/5 connections made, 5 echoed intact, 5 forwarded by the proxy" in proc.stdout


def test_run_target_sim_registers_and_unregisters_and_logs(tmp_path):
    log = tmp_path / "logs" / "proxy.log"
    proc = run_module("run", "--target", "sim", "--demo", "2", "--tcp-port", "9100", "--register-policy",
                      "--stats-interval", "0.001", "--log", str(log))
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    assert re.search(r"registered with the driver: ProxyProcessId=\d+, policy generation 2, 1 TCP", text)
    assert "unregistered: ProxyProcessId=0, policy generation 3" in text
    assert "stats: accepted=" in text and "stats at exit: accepted=2 forwarded=2" in text


def test_run_target_sim_without_set_records_fails_the_demo():
    proc = run_module("run", "--target", "sim", "--demo", "1", "--no-set-records")
    assert proc.returncode == 1
    assert "demo: 1/1 connections made, 0 echoed intact" in proc.stdout


def test_run_target_sim_port_in_use_is_one_line(monkeypatch, capsys):
    original = targets.SimTarget.open_api

    def open_api(self):
        api = original(self)
        _squat(self, self.config.tcp_port)
        return api
    monkeypatch.setattr(targets.SimTarget, "open_api", open_api)
    assert main(["run", "--target", "sim", "--tcp-port", "9000"]) == core.EXIT_STARTUP
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("python -m harness.proxy_service: cannot listen: bind(127.0.0.1:9000) failed: WSAEADDRINUSE "
                    "(10048): the port is in use by another process")]


@not_windows
@pytest.mark.parametrize("argv", [
    ["run", "--tcp-port", "9000", "--udp-port", "9053", "--agent", AGENT],
    ["service", "--tcp-port", "9000", "--agent", AGENT],
    ["install", "--tcp-port", "9000", "--agent", AGENT],
    ["uninstall"],
])
def test_windows_commands_off_windows_fail_with_one_line(argv):
    proc = run_module(*argv)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m harness.proxy_service: Windows is required"), proc.stderr
    assert proc.stdout == ""


def test_importing_loads_no_windows_library_and_not_the_simulator():
    code = """
import ctypes, sys
loaded = []
real_init = ctypes.CDLL.__init__
def spy(self, name, *a, **kw):
    loaded.append(name)
    real_init(self, name, *a, **kw)
ctypes.CDLL.__init__ = spy
import harness.proxy_service, harness.proxy_service.cli, harness.proxy_service.core
import harness.proxy_service.options, harness.proxy_service.targets, harness.proxy_service.win32
print(loaded, 'sim' in sys.modules, 'harness.agent' in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "False", "False"]
    for path in PACKAGE.glob("*.py"):
        source = path.read_text()
        assert "windll" not in source and "oledll" not in source, path.name
        tree = ast.parse(source)
        module_level = [n for stmt in tree.body if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef))
                        for n in ast.walk(stmt)
                        if isinstance(n, ast.Attribute) and n.attr in ("WinDLL", "CDLL", "LoadLibrary")]
        assert module_level == [], path.name


def test_unusable_log_file_is_a_one_line_startup_failure(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["run", "--target", "sim", "--demo", "1", "--log", str(blocker / "sub" / "proxy.log")])
    assert code == core.EXIT_STARTUP
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m harness.proxy_service: cannot open the log file ")


def test_agent_target_idle_waits_in_the_proxys_wsapoll_and_ends_on_traffic():
    """The real-Winsock target idles inside the proxy's WSAPoll: a connection ends the idle
    at once. Run here with the simulator standing in for ws2_32 (virtual time)."""
    from harness.winsock import constants as C
    from harness.proxy import redirect as rd
    from harness.proxy.reference import RedirectProxy
    from sim import World

    world = World("documented")
    host = world.add_host("box", ["192.0.2.10"])
    proxy_api = world.start_process(host, "proxy")
    proxy = RedirectProxy(proxy_api, "agent", tcp_port=9000, addresses=("127.0.0.1",)).start()
    target = targets.AgentTarget("agent", AGENT)
    target.attach(proxy)

    app = world.start_process(host, "app")
    sc = rd.Scratch(app)
    app.memory.write_u32(sc.value, 1)
    s = app.socket(C.AF_INET, C.SOCK_STREAM, 0)
    assert app.ioctlsocket(s, C.FIONBIO, sc.value) == 0
    name = sockaddr.from_text("127.0.0.1", 9000)
    app.memory.write(sc.addr, name)
    assert app.connect(s, sc.addr, len(name)) == C.SOCKET_ERROR     # in flight: WSAEWOULDBLOCK

    start = world.now_ns
    target.idle(proxy_api, 500)
    assert proxy.stats.accepted == 1
    assert proxy.stats.refused == 1            # not redirected: no context, nothing to forward to
    assert world.now_ns - start < 10_000_000   # woke on the connection, far before the 500 ms


def test_agent_path_survives_the_agent_launchers_shlex_split():
    """launch.start_command splits with POSIX shlex; a Windows path keeps its backslashes and spaces."""
    import shlex
    for path in (AGENT, r"C:\Program Files\wfp\winsock-agent.exe"):
        assert shlex.split(targets.agent_options(path)["agent_command"]) == [path]
    assert targets.agent_options(None) is None


# --- (g) secure by default: the account, the token, who may change the code ------------------

USER = "S-1-5-21-1004336348-1177238915-682003330-1001"          # an ordinary local user
AUTH_USERS, USERS, EVERYONE = "S-1-5-11", "S-1-5-32-545", "S-1-1-0"
MODIFY, READ_EXECUTE, FULL = 0x1301BF, 0x1200A9, 0x1F01FF            # the masks icacls shows as M, RX, F
CI_OI_IO = 0x1 | 0x2 | 0x8                                           # OBJECT/CONTAINER_INHERIT | INHERIT_ONLY


def sid_bytes(text: str) -> bytes:
    parts = [int(p) for p in text.split("-")[1:]]
    revision, authority, subs = parts[0], parts[1], parts[2:]
    return bytes([revision, len(subs)]) + authority.to_bytes(6, "big") + b"".join(s.to_bytes(4, "little")
                                                                                for s in subs)


def acl_bytes(aces) -> bytes:
    body = b""
    for ace_type, flags, mask, sid in aces:
        raw = struct.pack("<I", mask) + sid_bytes(sid)
        body += struct.pack("<BBH", ace_type, flags, 4 + len(raw)) + raw
    return struct.pack("<BBHHH", 2, 0, 8 + len(body), len(aces), 0) + body


PROGRAM_FILES_ACL = [(0, 0, FULL, options.SID_TRUSTED_INSTALLER), (0, 0, FULL, options.SID_SYSTEM),
                     (0, 0, FULL, options.SID_ADMINISTRATORS), (0, 0, READ_EXECUTE, USERS),
                     (0, CI_OI_IO, 0x10000000, options.SID_CREATOR_OWNER)]
# C:\ itself: Authenticated Users may create folders there (FILE_APPEND_DATA, this folder only)
# and get Modify on what they create below (inherit only).
ROOT_ACL = [(0, 0, FULL, options.SID_SYSTEM), (0, 0, FULL, options.SID_ADMINISTRATORS), (0, 0, READ_EXECUTE, USERS),
            (0, 0, 0x4, AUTH_USERS), (0, CI_OI_IO, MODIFY, AUTH_USERS)]
# A folder created under C:\ by an installer (C:\Python311): inherits Modify for Authenticated Users.
UNDER_ROOT_ACL = [(0, 0x10, FULL, options.SID_SYSTEM), (0, 0x10, FULL, options.SID_ADMINISTRATORS),
                  (0, 0x10, READ_EXECUTE, USERS), (0, 0x10, MODIFY, AUTH_USERS)]


def entry(acl, owner=options.SID_ADMINISTRATORS, path=r"C:\x", ancestor=False):
    aces = None if acl is None else tuple(options.parse_acl(acl_bytes(acl)))
    return options.PathSecurity(path, "above x" if ancestor else "x", owner, aces, ancestor)


def test_sids_and_acls_are_read_from_their_bytes():
    for text in (options.SID_SYSTEM, options.SID_ADMINISTRATORS, options.SID_TRUSTED_INSTALLER, USER, EVERYONE):
        assert options.sid_text(sid_bytes(text)) == text
    aces = options.parse_acl(acl_bytes(ROOT_ACL))
    assert [(a.type, a.flags, a.mask, a.sid) for a in aces] == ROOT_ACL
    with pytest.raises(ValueError, match="truncated"):
        options.sid_text(sid_bytes(USER)[:12])
    with pytest.raises(ValueError, match="bad size"):
        options.parse_acl(acl_bytes(ROOT_ACL)[:20] + b"\xff" * 4)


def test_only_administrators_system_and_trustedinstaller_may_change_code():
    assert options.writers(entry(PROGRAM_FILES_ACL, options.SID_TRUSTED_INSTALLER), options.TRUSTED_SIDS) == []
    assert options.writers(entry(UNDER_ROOT_ACL), options.TRUSTED_SIDS) == ["Authenticated Users (S-1-5-11)"]
    # The owner may always rewrite the DACL; OWNER RIGHTS stands for the owner.
    assert options.writers(entry(PROGRAM_FILES_ACL, USER), options.TRUSTED_SIDS) == [f"its owner {USER}"]
    assert options.writers(entry([(0, 0, MODIFY, options.SID_OWNER_RIGHTS)], USER), options.TRUSTED_SIDS) == \
        [f"its owner {USER}", "OWNER RIGHTS (S-1-3-4)"]
    assert options.writers(entry([(0, 0, MODIFY, options.SID_OWNER_RIGHTS)]), options.TRUSTED_SIDS) == []
    # ...unless the owner is the administrator who installs (the installer's own SID, when elevated).
    assert options.writers(entry(PROGRAM_FILES_ACL, USER), options.TRUSTED_SIDS | {USER}) == []
    # Adding a file to a PYTHONPATH directory is new code (a module, a .pth file).
    assert options.writers(entry([(0, 0, 0x2, USERS)]), options.TRUSTED_SIDS) == ["Users (S-1-5-32-545)"]
    assert options.writers(entry([(0, 0, 0x40000000, EVERYONE)]), options.TRUSTED_SIDS) == ["Everyone (S-1-1-0)"]
    assert options.writers(entry(None), options.TRUSTED_SIDS) == ["everyone (no DACL)"]
    assert options.writers(options.PathSecurity(r"C:\gone", "x", None), options.TRUSTED_SIDS) == \
        ["anyone allowed to create it (it does not exist)"]
    # A deny ACE is not credited; an ACE we cannot read that applies here refuses.
    assert options.writers(entry([(1, 0, MODIFY, USERS), (0, 0, MODIFY, USERS)]), options.TRUSTED_SIDS) == \
        ["Users (S-1-5-32-545)"]
    assert options.writers(entry([(0x11, 0, 0x1, USERS)]), options.TRUSTED_SIDS) == ["an ACE of type 0x11 we do not read"]
    assert options.writers(entry([(0x11, CI_OI_IO, 0x1, USERS)]), options.TRUSTED_SIDS) == []


def test_above_the_code_only_replacing_it_counts():
    # C:\ lets users create folders: harmless above C:\Program Files\Python311, it cannot replace it.
    assert options.writers(entry(ROOT_ACL, path="C:\\", ancestor=True), options.TRUSTED_SIDS) == []
    # A parent where users may delete children (or the parent itself) lets them swap the code's directory.
    assert options.writers(entry([(0, 0, 0x40, USERS)], ancestor=True), options.TRUSTED_SIDS) == ["Users (S-1-5-32-545)"]
    assert options.writers(entry([(0, 0, 0x10000, AUTH_USERS)], ancestor=True), options.TRUSTED_SIDS) == \
        ["Authenticated Users (S-1-5-11)"]
    assert options.ancestors(r"C:\Program Files\Python311\python.exe") == [r"C:\Program Files\Python311",
                                                                            r"C:\Program Files", "C:\\"]


def test_the_account_is_the_least_that_works():
    cfg = core.ProxyConfig(tcp_port=9000)
    assert options.service_account(cfg, "auto", "P")[0] is None                        # SET needs an administrator
    assert "SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS" in options.service_account(cfg, "auto", "P")[1]
    listen_only = core.ProxyConfig(tcp_port=9000, set_records=False)
    assert options.service_account(listen_only, "auto", "P") == ("NT SERVICE\\P", "its virtual account: it only "
                                                                 "listens and forwards")
    assert options.service_account(core.ProxyConfig(tcp_port=9000, set_records=False, register_policy=True),
                                   "auto", "P")[0] is None
    assert options.service_account(listen_only, "localsystem", "P")[0] is None
    with pytest.raises(ValueError, match="--account virtual cannot work: it sets redirect records"):
        options.service_account(cfg, "virtual", "P")


def _plan(*extra, executable=r"C:\Program Files\Python311\python.exe"):
    args, cfg = options.parse(["install", "--tcp-port", "9000", "--agent", AGENT, *extra])
    return options.plan_install(args, cfg, executable=executable, base_executable=executable,
                                prefix=r"C:\Program Files\Python311", base_prefix=r"C:\Program Files\Python311",
                                package_root=r"C:\Program Files\wfp", program_data=r"C:\ProgramData")


def test_install_plan_restricts_the_token_and_lists_the_code_it_loads():
    plan = _plan()
    assert plan.account is None and plan.required_privileges == ("SeChangeNotifyPrivilege",)
    assert plan.sid_type == options.SERVICE_SID_TYPE_UNRESTRICTED
    assert _plan("--no-set-records").account == "NT SERVICE\\WfpRedirectProxy"
    paths = options.code_paths(plan, r"C:\Program Files\wfp\harness",
                               [r"C:\Program Files\wfp\harness\targets.py"])
    assert paths == [(r"C:\Program Files\Python311\python.exe", "the interpreter"),
                     (r"C:\Program Files\Python311", "the interpreter's directory"),
                     (r"C:\Program Files\Python311\Lib", "the standard library"),
                     (r"C:\Program Files\Python311\DLLs", "the interpreter's extension modules"),
                     (r"C:\Program Files\wfp", "a PYTHONPATH entry"),
                     (r"C:\Program Files\wfp\harness", "the harness package"),
                     (r"C:\Program Files\wfp\harness\targets.py", "a harness module"),
                     (AGENT, "the winsock-agent")]
    with pytest.raises(ValueError, match="--agent must be the absolute path"):
        _plan("--agent", "winsock-agent.exe")


def test_install_usage_problems_are_one_line_before_anything_else(capsys):
    assert main(["install", "--tcp-port", "9000", "--agent", "agent.exe"]) == core.EXIT_USAGE
    assert main(["install", "--tcp-port", "9000", "--agent", AGENT, "--account", "virtual"]) == core.EXIT_USAGE
    assert capsys.readouterr().err.splitlines() == [
        "python -m harness.proxy_service: --agent must be the absolute path of winsock-agent.exe, not 'agent.exe'",
        "python -m harness.proxy_service: --account virtual cannot work: it sets redirect records "
        "(SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS needs an administrator); a virtual account is no administrator"]


class FakeSecurity(FakeWindows):
    """GetNamedSecurityInfoW over a table path -> (owner SID, ACEs or None), with real
    security-descriptor bytes behind the pointers it returns; the SCM's config calls recorded."""

    def __init__(self, table, elevated_user=None):
        self.table, self.buffers, self.freed, self.config = table, {}, [], []
        self.elevated_user = elevated_user
        super().__init__()

    def GetNamedSecurityInfoW(self, path, object_type, info, pp_owner, pp_group, pp_dacl, pp_sacl, pp_sd):
        self.calls.append(("GetNamedSecurityInfoW", path, object_type, info))
        if path not in self.table:
            return win32.ERROR_FILE_NOT_FOUND
        owner, aces = self.table[path]
        owner_buf = ctypes.create_string_buffer(sid_bytes(owner))
        dacl_buf = None if aces is None else ctypes.create_string_buffer(acl_bytes(aces))
        sd_ = ctypes.create_string_buffer(8)
        self.buffers[ctypes.addressof(sd_)] = (owner_buf, dacl_buf, sd_)
        ctypes.c_void_p.from_address(pp_owner).value = ctypes.addressof(owner_buf)
        ctypes.c_void_p.from_address(pp_dacl).value = ctypes.addressof(dacl_buf) if dacl_buf else None
        ctypes.c_void_p.from_address(pp_sd).value = ctypes.addressof(sd_)
        return 0

    def GetLengthSid(self, sid):
        return 8 + 4 * ctypes.string_at(sid, 2)[1]

    def LocalFree(self, h):
        self.freed.append(self.buffers.pop(h) and h)
        return None

    def OpenProcessToken(self, process, access, ptoken):
        ctypes.c_void_p.from_address(ptoken).value = 0x70
        return 1

    def GetCurrentProcess(self):
        return 0xFFFFFFFFFFFFFFFF

    def GetTokenInformation(self, token, cls, buf, size, pret):
        if cls == win32.TokenElevation:
            ctypes.c_uint32.from_address(buf).value = int(self.elevated_user is not None)
            return 1
        self._user = ctypes.create_string_buffer(sid_bytes(self.elevated_user))
        ctypes.c_void_p.from_address(buf).value = ctypes.addressof(self._user)
        return 1

    def OpenSCManagerW(self, machine, db, access):
        return 0x51

    def CreateServiceW(self, scm, name, display, access, stype, start, err, binary, group, tag, deps, account, pw):
        self.calls.append(("CreateServiceW", name, binary, account, pw))
        return 0x52

    def ChangeServiceConfig2W(self, svc, level, info):
        if level == win32.SERVICE_CONFIG_SERVICE_SID_INFO:
            self.config.append(("sid type", win32.SERVICE_SID_INFO.from_address(info).dwServiceSidType))
        elif level == win32.SERVICE_CONFIG_REQUIRED_PRIVILEGES_INFO:
            p = win32.SERVICE_REQUIRED_PRIVILEGES_INFOW.from_address(info).pmszRequiredPrivileges
            chars, width = [], ctypes.sizeof(ctypes.c_wchar)
            while chars[-2:] != ["\0", "\0"]:                 # a multi-string ends with an empty string
                chars.append(ctypes.c_wchar.from_address(p + width * len(chars)).value)
            self.config.append(("privileges", "".join(chars[:-2]).split("\0")))
            if self.refuse_privileges:
                self.last_error = 87
                return 0
        return 1

    refuse_privileges = False

    def DeleteService(self, svc):
        self.calls.append(("DeleteService", svc))
        return 1

    def CloseServiceHandle(self, h):
        return 1

    def StartServiceW(self, svc, n, args):
        return 1

    def RegOpenKeyExW(self, hkey, subkey, options_, sam, phk):
        self.calls.append(("RegOpenKeyExW", hkey, subkey, sam))
        ctypes.c_void_p.from_address(phk).value = 0x1234
        return 0

    def RegSetValueExW(self, hkey, name, reserved, regtype, data, cb):
        self.calls.append(("RegSetValueExW", name, regtype, ctypes.string_at(data, cb)))
        return 0


def _secure_table(python_dir_acl=PROGRAM_FILES_ACL, owner=options.SID_TRUSTED_INSTALLER):
    table = {p: (owner, PROGRAM_FILES_ACL) for p in (
        r"C:\Program Files", r"C:\Program Files\Python311\python.exe", r"C:\Program Files\Python311\Lib",
        r"C:\Program Files\Python311\DLLs", r"C:\Program Files\wfp", r"C:\Program Files\wfp\harness", "C:\\wfp",
        AGENT)}
    table["C:\\"] = (options.SID_TRUSTED_INSTALLER, ROOT_ACL)
    table[r"C:\Program Files\Python311"] = (owner, python_dir_acl)
    return table


def test_path_security_reads_owner_and_dacl_through_the_prototype_and_frees_it():
    fake = FakeSecurity(_secure_table(UNDER_ROOT_ACL))
    got = win32.path_security(fake.fns, r"C:\Program Files\Python311", "the interpreter's directory")
    assert got.owner == options.SID_TRUSTED_INSTALLER and got.dacl == tuple(options.parse_acl(acl_bytes(UNDER_ROOT_ACL)))
    assert fake.calls[-1] == ("GetNamedSecurityInfoW", r"C:\Program Files\Python311", win32.SE_FILE_OBJECT,
                              win32.OWNER_SECURITY_INFORMATION | win32.DACL_SECURITY_INFORMATION)
    assert fake.buffers == {} and len(fake.freed) == 1
    assert win32.path_security(fake.fns, r"C:\nowhere", "x").owner is None
    fake.table[r"C:\open"] = (USER, None)
    assert win32.path_security(fake.fns, r"C:\open", "x").dacl is None
    entries = win32.code_security(fake.fns, [(AGENT, "the winsock-agent"), (r"C:\wfp\other.exe", "x")])
    assert [(e.path, e.ancestor) for e in entries] == [(AGENT, False), (r"C:\wfp\other.exe", False),
                                                         ("C:\\wfp", True), ("C:\\", True)]
    assert win32.installer_sid(FakeSecurity({}, elevated_user=USER).fns) == USER
    assert win32.installer_sid(FakeSecurity({}).fns) is None


def test_install_refuses_code_a_user_can_change_in_one_line(capsys, tmp_path):
    from harness.proxy_service import cli
    plan = _plan()
    package = tmp_path / "harness"
    (package / "proxy_service").mkdir(parents=True)
    (package / "proxy_service" / "core.py").write_text("")
    table = _secure_table()
    table[r"C:\Program Files\wfp\harness"] = (options.SID_TRUSTED_INSTALLER, PROGRAM_FILES_ACL)
    files = sorted(str(p) for p in package.rglob("*.py"))
    for f in files:
        table[f] = (options.SID_TRUSTED_INSTALLER, PROGRAM_FILES_ACL)
        for parent in options.ancestors(f):
            table.setdefault(parent, (options.SID_TRUSTED_INSTALLER, PROGRAM_FILES_ACL))
    table[str(package)] = table[r"C:\Program Files\wfp\harness"]
    for parent in options.ancestors(str(package)):
        table.setdefault(parent, (options.SID_TRUSTED_INSTALLER, PROGRAM_FILES_ACL))
    cli.refuse_writable_code(FakeSecurity(table).fns, plan, package)          # all protected: no error
    table[r"C:\Program Files\Python311"] = (options.SID_TRUSTED_INSTALLER, UNDER_ROOT_ACL)
    table[AGENT] = (USER, PROGRAM_FILES_ACL)
    with pytest.raises(core.StartupError) as info:
        cli.refuse_writable_code(FakeSecurity(table).fns, plan, package)
    assert info.value.exit_code == core.EXIT_USAGE
    assert str(info.value) == (r"refusing to install: C:\Program Files\Python311 (the interpreter's directory): "
                               r"writable by Authenticated Users (S-1-5-11) (and 1 more: run with -v); the service "
                               r"would run that code as LocalSystem")
    # The administrator who installs may own the agent.
    table[r"C:\Program Files\Python311"] = (options.SID_TRUSTED_INSTALLER, PROGRAM_FILES_ACL)
    cli.refuse_writable_code(FakeSecurity(table, elevated_user=USER).fns, plan, package)


def test_service_manager_installs_with_the_account_the_sid_type_and_only_the_required_privileges():
    plan = _plan("--no-set-records")
    fake = FakeSecurity({})
    win32.ServiceManager(fake.fns).install(plan)
    create = [c for c in fake.calls if c[0] == "CreateServiceW"][0]
    assert create[3:] == ("NT SERVICE\\WfpRedirectProxy", None)
    assert fake.config == [("sid type", 1), ("privileges", ["SeChangeNotifyPrivilege"])]
    fake = FakeSecurity({})
    fake.refuse_privileges = True
    with pytest.raises(core.StartupError, match="could not set the required privileges .* deleted again"):
        win32.ServiceManager(fake.fns).install(_plan())
    assert ("DeleteService", 0x52) in fake.calls
    assert [c for c in fake.calls if c[0] == "CreateServiceW"][0][3] is None          # LocalSystem
