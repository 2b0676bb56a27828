"""The pure logic of the packaged proxy: no ctypes, no Windows, no simulator.

* :class:`ProxySession` runs the reference :class:`RedirectProxy` over any
  target (the native provider, or the simulator): start (elevation check,
  listen, register with the driver), the poll loop with a stop flag and
  periodic stats, close (unregister, close sockets).
* :func:`plan_registration` / :func:`plan_unregistration`: the policy update
  plan, current registry values -> values to write -> the reload result to
  expect, built on :mod:`harness.sample_driver`.
* :class:`ServiceStatusMachine` and :func:`run_service`: which
  ``SetServiceStatus`` calls a service makes, in which order, for start,
  stop and a failed start. The ctypes layer (``win32.py``) only turns each
  :class:`ServiceStatus` into a ``SERVICE_STATUS`` and calls the API.
"""
from __future__ import annotations

import logging
import struct
import threading
from dataclasses import dataclass, field

from harness.winsock import constants as C
from harness.proxy import redirect as rd
from harness import sample_driver as sd
from harness.proxy.reference import RedirectProxy

LOG = logging.getLogger("harness.proxy_service")

# --- exit codes of the command ---------------------------------------------------
EXIT_OK = 0
EXIT_STARTUP = 1        # could not start: port in use, driver absent, not elevated, policy refused
EXIT_USAGE = 2          # bad arguments, or this OS cannot do what was asked (Windows required)
EXIT_RUNTIME = 3        # the proxy loop failed after a good start

# --- Win32 error codes used in messages and service exit codes (winerror.h) ------
ERROR_FILE_NOT_FOUND = 2
ERROR_PATH_NOT_FOUND = 3
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_PARAMETER = 87
ERROR_CALL_NOT_IMPLEMENTED = 120
ERROR_SERVICE_SPECIFIC_ERROR = 1066
NO_ERROR = 0


class StartupError(Exception):
    """The proxy could not start. ``str()`` is the one-line message for the operator.

    ``win32_error`` (when there is one) becomes the service's dwWin32ExitCode, so
    the System event log says e.g. "Only one usage of each socket address...".
    """

    def __init__(self, message: str, *, win32_error: int = 0, exit_code: int = EXIT_STARTUP):
        super().__init__(message)
        self.win32_error = win32_error
        self.exit_code = exit_code


class PolicyRefused(StartupError):
    """The driver (or the plan, beforehand) refused the policy; the previous one stays in force."""


# --- configuration ----------------------------------------------------------------
@dataclass(frozen=True)
class ProxyConfig:
    tcp_port: int = 0
    udp_port: int = 0
    addresses: tuple[str, ...] = ("127.0.0.1", "::1")
    set_records: bool = True
    register_policy: bool = False
    stats_interval: float = 60.0        # seconds of the target's clock
    max_idle_ms: int = 8                # the poll loop idles 1, 2, 4 .. max_idle_ms (natively: in WSAPoll)
    name: str = "proxy"


# --- the policy update plan -------------------------------------------------------
def encode_value(regtype: int, value) -> bytes:
    """The bytes RegSetValueExW writes for a decoded value (REG_DWORD int, REG_MULTI_SZ list of str)."""
    if regtype == sd.REG_DWORD:
        return struct.pack("<I", value)
    if regtype == sd.REG_MULTI_SZ:
        return "".join(s + "\0" for s in value).encode("utf-16-le") + b"\0\0"
    if regtype in (sd.REG_SZ, sd.REG_EXPAND_SZ):
        return (value + "\0").encode("utf-16-le")
    return bytes(value)


@dataclass(frozen=True)
class PolicyPlan:
    """What registering (or unregistering) does to the driver's policy."""

    old: sd.RedirectPolicy
    new: sd.RedirectPolicy
    writes: dict            # value name -> (REG type, raw bytes for RegSetValueExW)
    expected: dict          # WFPRC_RELOAD_RESULT fields the reload must report
    warnings: tuple = ()

    def check(self, result: dict) -> list[str]:
        """Differences between the decoded reload result and what the plan expects."""
        problems = [f"{name}={result.get(name)} (expected {want})"
                    for name, want in self.expected.items() if result.get(name) != want]
        if result.get("generation", 0) < 2:
            problems.append(f"generation={result.get('generation')} (a reload makes it at least 2)")
        return problems


def _current_policy(values, what: str) -> sd.RedirectPolicy:
    try:
        return sd.parse_registry_values(values)
    except ValueError as exc:
        raise PolicyRefused(f"{what}: the current policy under {sd.PARAMETERS_KEY} is invalid ({exc}); "
                            f"the driver would refuse it too, fix it first",
                            win32_error=ERROR_INVALID_PARAMETER) from None


def _expected(policy: sd.RedirectPolicy) -> dict:
    return {"proxy_process_id": policy.proxy_process_id, "tcp_port_count": len(policy.tcp_ports),
            "udp_port_count": len(policy.udp_ports)}


def plan_registration(values, pid: int, *, tcp_port: int = 0, udp_port: int = 0) -> PolicyPlan:
    """Register ``pid`` as the proxy: ``values`` are the current registry values
    ({name: (REG type, decoded value or raw bytes)}, as RegQueryValueExW or a .reg
    file gives them). Only ProxyProcessId is written; the rest of the policy is the
    administrator's. Refuses (PolicyRefused) a current policy the driver would
    refuse, and one that sends redirected traffic to a port this proxy does not
    listen on."""
    old = _current_policy(values, "cannot register")
    for proto, ports, proxy_port, mine, pname in (
            ("TCP", old.tcp_ports, old.tcp_proxy_port, tcp_port, sd.VALUE_TCP_PROXY_PORT),
            ("UDP", old.udp_ports, old.udp_proxy_port, udp_port, sd.VALUE_UDP_PROXY_PORT)):
        if ports and proxy_port != mine:
            listening = f"listens on {proto} {mine}" if mine else f"does not listen on {proto}"
            raise PolicyRefused(
                f"cannot register: the policy redirects {proto} ports {','.join(map(str, ports))} to "
                f"{pname}={proxy_port} but this proxy {listening}", win32_error=ERROR_INVALID_PARAMETER)
    new = old.with_proxy_process_id(pid)
    regtype, value = new.to_registry_values()[sd.VALUE_PROXY_PROCESS_ID]
    warnings = []
    if old.proxy_process_id not in (0, pid):
        warnings.append(f"replacing ProxyProcessId={old.proxy_process_id} (another proxy, or a stale PID)")
    if not new.enabled:
        warnings.append("the policy is disabled (Enabled=0): nothing will be redirected")
    elif not (new.tcp_ports or new.udp_ports):
        warnings.append("the policy lists no TcpPorts/UdpPorts: nothing will be redirected")
    if pid in new.excluded_process_ids:
        warnings.append(f"this proxy's PID {pid} is in ExcludedProcessIds (harmless: belt and braces)")
    return PolicyPlan(old, new, {sd.VALUE_PROXY_PROCESS_ID: (regtype, encode_value(regtype, value))},
                      _expected(new), tuple(warnings))


def plan_unregistration(values, pid: int) -> PolicyPlan | None:
    """At exit: ProxyProcessId=0, so a recycled PID never receives redirected
    connections. None when the registry no longer names this PID (another proxy
    registered since: leave it alone)."""
    old = _current_policy(values, "cannot unregister")
    if old.proxy_process_id != pid:
        return None
    new = old.with_proxy_process_id(0)
    regtype, value = new.to_registry_values()[sd.VALUE_PROXY_PROCESS_ID]
    return PolicyPlan(old, new, {sd.VALUE_PROXY_PROCESS_ID: (regtype, encode_value(regtype, value))},
                      _expected(new))


def decode_reload_result(raw: bytes) -> dict:
    """WFPRC_RELOAD_RESULT bytes -> {generation, proxy_process_id, tcp_port_count, udp_port_count}."""
    if len(raw) != sd.RELOAD_RESULT.size:
        raise PolicyRefused(f"IOCTL_WFPRC_RELOAD_POLICY returned {len(raw)} bytes, expected "
                            f"{sd.RELOAD_RESULT.size} (WFPRC_RELOAD_RESULT): driver version mismatch?")
    return sd.RELOAD_RESULT.unpack(raw)


def apply_plan(store, plan: PolicyPlan, log=LOG) -> dict:
    """Write the plan's values, make the driver reload, check its answer."""
    for warning in plan.warnings:
        log.warning("policy: %s", warning)
    for name, (regtype, data) in plan.writes.items():
        store.write_value(name, regtype, data)
    result = decode_reload_result(store.reload())
    problems = plan.check(result)
    if problems:
        raise PolicyRefused("the driver reloaded a different policy than written: " + "; ".join(problems)
                            + " (did something else change the Parameters key meanwhile?)")
    return result


# --- the proxy session ----------------------------------------------------------------
def format_stats(stats) -> str:
    return (f"accepted={stats.accepted} forwarded={stats.forwarded} closed={stats.closed} "
            f"refused={stats.refused} udp_flows={stats.udp_flows} bytes_up={stats.bytes_up} "
            f"bytes_down={stats.bytes_down} errors={len(stats.errors)}")


def _winsock_startup_error(exc: rd.WinsockError, config: ProxyConfig) -> StartupError:
    hint = {C.WSAEADDRINUSE: "the port is in use by another process",
            C.WSAEACCES: "the port is reserved or held exclusively (netsh int ipv4 show excludedportrange "
                         "protocol=tcp)",
            C.WSAEADDRNOTAVAIL: "that address is not configured on this machine (IPv6 disabled? "
                                "pass --address 127.0.0.1)",
            C.WSAEAFNOSUPPORT: "that address family is not supported here (pass --address 127.0.0.1)"}
    extra = hint.get(exc.code)
    return StartupError(f"cannot listen: {exc.strerror}" + (f": {extra}" if extra else ""), win32_error=exc.code)


class ProxySession:
    """One run of the reference proxy over a target.

    A target provides: ``open_api()`` (a WinsockApi), ``is_elevated()`` (True,
    False or None if unknown), ``policy_store()`` (read_values / write_value /
    reload / close), ``idle(api, ms)``, ``clock()`` (seconds), ``attach(proxy)``
    and ``close()``. ``progress(step)`` is called after each start step (the
    service reports a START_PENDING checkpoint for each).
    """

    STEPS = ("listening", "registered")

    def __init__(self, target, config: ProxyConfig, log=LOG, progress=lambda step: None):
        self.target = target
        self.config = config
        self.log = log
        self.progress = progress
        self.api = None
        self.proxy: RedirectProxy | None = None
        self.registered: dict | None = None       # the reload result, when registered
        self._errors_seen = 0
        self.started = False                      # start() completed

    # -- start -----------------------------------------------------------------------
    def start(self) -> ProxySession:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        cfg = self.config
        if cfg.set_records or cfg.register_policy:
            elevated = self.target.is_elevated()
            if elevated is False:
                need = "SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS" if cfg.set_records else "the driver's registry key"
                raise StartupError(f"not elevated: {need} needs an administrator (run from an elevated prompt, "
                                   f"or install as a service)", win32_error=ERROR_ACCESS_DENIED)
        self.api = self.target.open_api()
        self.proxy = RedirectProxy(self.api, cfg.name, tcp_port=cfg.tcp_port, udp_port=cfg.udp_port,
                                   addresses=cfg.addresses, set_records=cfg.set_records)
        try:
            self.proxy.start()
        except rd.WinsockError as exc:
            raise _winsock_startup_error(exc, cfg) from None
        self.target.attach(self.proxy)
        ports = ", ".join(f"{p} {n}" for p, n in (("TCP", cfg.tcp_port), ("UDP", cfg.udp_port)) if n)
        self.log.info("%s (pid %d) listening on %s at %s; set records: %s", cfg.name, self.proxy.pid,
                      " and ".join(cfg.addresses), ports, "yes" if cfg.set_records else "NO")
        self.progress("listening")
        if cfg.register_policy:
            self._register()
            self.progress("registered")
        self.started = True

    def _register(self) -> None:
        store = self.target.policy_store()
        try:
            plan = plan_registration(store.read_values(), self.proxy.pid, tcp_port=self.config.tcp_port,
                                     udp_port=self.config.udp_port)
            self.registered = apply_plan(store, plan, self.log)
        finally:
            store.close()
        r = self.registered
        self.log.info("registered with the driver: ProxyProcessId=%d, policy generation %d, %d TCP and %d UDP "
                      "ports redirected", r["proxy_process_id"], r["generation"], r["tcp_port_count"],
                      r["udp_port_count"])

    # -- the loop ----------------------------------------------------------------------
    def serve(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; idle 1, 2, 4 .. max_idle_ms at a time (the target's idle:
        natively a WSAPoll that traffic ends at once); log stats
        every stats_interval seconds and each new proxy error as it appears."""
        proxy, target, cfg = self.proxy, self.target, self.config
        next_stats = target.clock() + cfg.stats_interval
        idle_ms = 1
        while not stop.is_set():
            if proxy.poll():
                idle_ms = 1
            else:
                target.idle(self.api, idle_ms)
                idle_ms = min(idle_ms * 2, cfg.max_idle_ms)
            if len(proxy.stats.errors) > self._errors_seen:
                for error in proxy.stats.errors[self._errors_seen:]:
                    self.log.warning("proxy: %s", error)
                self._errors_seen = len(proxy.stats.errors)
            now = target.clock()
            if now >= next_stats:
                self.log.info("stats: %s", format_stats(proxy.stats))
                next_stats = now + cfg.stats_interval

    # -- close -------------------------------------------------------------------------
    def close(self) -> None:
        """Unregister (ProxyProcessId=0 if still ours), close every socket, release the target."""
        if self.registered is not None:
            self.registered = None
            try:
                store = self.target.policy_store()
                try:
                    plan = plan_unregistration(store.read_values(), self.proxy.pid)
                    if plan is None:
                        self.log.info("not unregistering: ProxyProcessId no longer names this process")
                    else:
                        result = apply_plan(store, plan, self.log)
                        self.log.info("unregistered: ProxyProcessId=0, policy generation %d", result["generation"])
                finally:
                    store.close()
            except (StartupError, OSError) as exc:
                self.log.error("could not unregister from the driver: %s", exc)
        if self.proxy is not None:
            self.proxy.close()
            if self.started:
                self.log.info("stats at exit: %s", format_stats(self.proxy.stats))
        try:
            self.target.close()
        finally:
            self.api = None


# --- the service state machine ----------------------------------------------------------
SERVICE_WIN32_OWN_PROCESS = 0x00000010
SERVICE_STOPPED = 1
SERVICE_START_PENDING = 2
SERVICE_STOP_PENDING = 3
SERVICE_RUNNING = 4
SERVICE_ACCEPT_STOP = 0x1
SERVICE_ACCEPT_SHUTDOWN = 0x4
SERVICE_CONTROL_STOP = 1
SERVICE_CONTROL_INTERROGATE = 4
SERVICE_CONTROL_SHUTDOWN = 5
STATE_NAMES = {SERVICE_STOPPED: "STOPPED", SERVICE_START_PENDING: "START_PENDING",
               SERVICE_STOP_PENDING: "STOP_PENDING", SERVICE_RUNNING: "RUNNING"}


@dataclass(frozen=True)
class ServiceStatus:
    """One SERVICE_STATUS as passed to SetServiceStatus (field names of winsvc.h)."""

    dwCurrentState: int
    dwControlsAccepted: int = 0
    dwWin32ExitCode: int = NO_ERROR
    dwServiceSpecificExitCode: int = 0
    dwCheckPoint: int = 0
    dwWaitHint: int = 0
    dwServiceType: int = SERVICE_WIN32_OWN_PROCESS

    @property
    def state(self) -> str:
        return STATE_NAMES.get(self.dwCurrentState, str(self.dwCurrentState))


@dataclass
class ServiceStatusMachine:
    """What the service tells the SCM, in order (the "Writing a ServiceMain Function" rules):

    * START_PENDING with dwCheckPoint 1, 2, ... and a wait hint while starting,
      accepting no controls;
    * RUNNING accepting STOP and SHUTDOWN, checkpoint 0, no wait hint;
    * on STOP/SHUTDOWN (the handler): set the stop flag, STOP_PENDING with
      checkpoint 1, then 2, ... while cleaning up;
    * STOPPED, accepting nothing, with the exit code: dwWin32ExitCode = a
      Win32 error, or ERROR_SERVICE_SPECIFIC_ERROR and
      dwServiceSpecificExitCode = the command's exit code. Nothing after it.

    ``report(status)`` is the only side effect (win32.py: SetServiceStatus).
    Called from ServiceMain's thread and from the handler's thread, hence the lock.
    """

    report: object
    start_wait_hint: int = 30_000
    stop_wait_hint: int = 30_000
    stop_event: threading.Event = field(default_factory=threading.Event)
    state: int = SERVICE_STOPPED
    checkpoint: int = 0
    finished: bool = False              # the final STOPPED was reported: nothing may follow
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def _send(self, state: int, accepted: int = 0, wait_hint: int = 0, win32_exit: int = NO_ERROR,
              specific: int = 0) -> None:
        pending = state in (SERVICE_START_PENDING, SERVICE_STOP_PENDING)
        if pending:
            self.checkpoint = self.checkpoint + 1 if self.state == state else 1
        else:
            self.checkpoint = 0
        self.state = state
        self.report(ServiceStatus(state, accepted, win32_exit, specific, self.checkpoint if pending else 0,
                                  wait_hint if pending else 0))

    def start_pending(self) -> None:
        with self._lock:
            if self.finished or self.state not in (SERVICE_STOPPED, SERVICE_START_PENDING):
                raise RuntimeError(f"START_PENDING after {STATE_NAMES[self.state]}")
            self._send(SERVICE_START_PENDING, wait_hint=self.start_wait_hint)

    def running(self) -> None:
        with self._lock:
            if self.state != SERVICE_START_PENDING:
                raise RuntimeError(f"RUNNING after {STATE_NAMES[self.state]}")
            self._send(SERVICE_RUNNING, SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN)

    def stop_pending(self) -> None:
        with self._lock:
            if not self.finished and self.state in (SERVICE_RUNNING, SERVICE_STOP_PENDING,
                                                     SERVICE_START_PENDING):
                self._send(SERVICE_STOP_PENDING, wait_hint=self.stop_wait_hint)

    def stopped(self, win32_exit_code: int = NO_ERROR, service_specific: int = 0) -> None:
        with self._lock:
            if self.finished:
                return
            if service_specific:
                win32_exit_code = ERROR_SERVICE_SPECIFIC_ERROR
            self._send(SERVICE_STOPPED, win32_exit=win32_exit_code, specific=service_specific)
            self.finished = True

    def handle_control(self, control: int, event_type: int = 0) -> int:
        """The HandlerEx body: returns what HandlerEx returns to the SCM."""
        with self._lock:
            if control in (SERVICE_CONTROL_STOP, SERVICE_CONTROL_SHUTDOWN):
                self.stop_event.set()
                if self.state == SERVICE_RUNNING and not self.finished:
                    self._send(SERVICE_STOP_PENDING, wait_hint=self.stop_wait_hint)
                return NO_ERROR
            if control == SERVICE_CONTROL_INTERROGATE:
                return NO_ERROR                          # the SCM already knows the state
            return ERROR_CALL_NOT_IMPLEMENTED


def exit_codes(exc: BaseException) -> tuple[int, int]:
    """(dwWin32ExitCode, dwServiceSpecificExitCode) for a failure."""
    if isinstance(exc, StartupError):
        if exc.win32_error:
            return exc.win32_error, 0
        return ERROR_SERVICE_SPECIFIC_ERROR, exc.exit_code
    return ERROR_SERVICE_SPECIFIC_ERROR, EXIT_RUNTIME


def run_service(machine: ServiceStatusMachine, make_session, log=LOG) -> int:
    """ServiceMain's body. ``make_session(progress)`` returns an unstarted ProxySession.

    Start: START_PENDING(1), START_PENDING(2..) per start step, RUNNING.
    Stop:  (handler) STOP_PENDING(1), STOP_PENDING(2) before cleanup, STOPPED(0).
    Failed start: START_PENDING(1..), STOPPED with the error.
    Returns the exit code the command would have.
    """
    machine.start_pending()
    try:
        session = make_session(lambda step: machine.start_pending())
        session.start()
    except StartupError as exc:
        log.error("service not started: %s", exc)
        machine.stopped(*exit_codes(exc))
        return exc.exit_code
    except Exception as exc:
        log.exception("service not started")
        machine.stopped(*exit_codes(exc))
        return EXIT_RUNTIME
    machine.running()
    failure = None
    try:
        session.serve(machine.stop_event)
    except Exception as exc:
        log.exception("proxy loop failed")
        failure = exc
    machine.stop_pending()
    try:
        session.close()
    except Exception as exc:
        log.exception("cleanup failed")
        failure = failure or exc
    if failure is not None:
        machine.stopped(*exit_codes(failure))
        return EXIT_RUNTIME
    machine.stopped()
    return EXIT_OK
