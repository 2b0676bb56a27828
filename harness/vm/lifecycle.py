"""The per-guest lifecycle: an explicit state machine of named phases.

Resources (the vCenter, the guest), drivers (:class:`~harness.vm.vsphere.VSphere`,
:class:`~harness.vm.ssh.GuestSsh`) and this strategy are kept apart, as in
labgrid: :class:`GuestAttempt` walks one fresh clone through :data:`PHASES`
(``plan()`` gives the exact list for a run), with the OS-specific command
text coming from a :mod:`~harness.vm.guest_os` adapter.

Outcomes of one attempt:

* returns normally: the suite ran (tests may have failed), or a *product*
  failure stopped it (driver did not install/load, bugcheck, hang);
  evidence was collected either way;
* raises :class:`~harness.vm.errors.InfrastructureError`: the lab failed; the
  caller may retry on a fresh clone;
* raises anything else: a harness bug; never retried.

The clone is destroyed in ``finally`` whatever happens.  Every phase writes
its own log file; command output streams into files next to it.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from contextlib import contextmanager

from harness.vm.config import Guest, LabConfig
from harness.vm import agent_ssh, wincmd
from harness.vm.errors import (
    GuestFault, GuestSetupError, HarnessError, HostileGuest, InfrastructureError, ProductFailure, SshError,
)
from harness.vm.guest_os import DumpFile, GuestOs, guest_os_for, summarize_analysis
from harness.vm.package import WHEELHOUSE_REQUIREMENTS, DriverPackage, check_wheelhouse
from harness.vm.progress import Progress
from harness.vm.redact import RedactingFilter, SecretRegistry
from harness.vm.ssh import (
    CommandHang, ConnectFailed, ConnectionDropped, ExecResult, ExitStatusUnknown, GuestSsh, SshEndpoint,
)
from harness.vm.vsphere import Clone, VSphere

__all__ = ["PHASES", "GuestAttempt", "GuestResult", "RunContext", "Interrupted", "plan"]

log = logging.getLogger(__name__)

# Every phase a guest can go through, in order.  Driver phases are skipped
# when the run has no driver package.
PHASES = (
    "clone", "power_on", "wait_ready", "connect", "check_guest", "upload", "install_harness",
    "install_driver", "configure_debug", "reboot", "verify_debug", "capture_start", "run_suite",
    "capture_stop", "collect", "destroy",
)
_DRIVER_PHASES = {"install_driver", "reboot", "verify_debug"}
# Phases only a guest that runs the suite itself needs (suite = "guest").
_ON_GUEST_PHASES = {"install_harness"}


def plan(with_driver: bool, suite: str = "guest") -> list[str]:
    return [p for p in PHASES if (with_driver or p not in _DRIVER_PHASES)
            and (suite == "guest" or p not in _ON_GUEST_PHASES)]


class Interrupted(Exception):
    """The run was cancelled (Ctrl-C, SIGTERM): stop at the next phase boundary."""

    kind = "interrupted"


@dataclass
class RunContext:
    """What every guest of one run shares."""

    lab: LabConfig
    run_id: str
    run_dir: Path
    registry: SecretRegistry
    wheelhouse: Path
    driver: DriverPackage | None
    progress: Progress
    connect_vsphere: Callable[[], VSphere]
    cancel: threading.Event = field(default_factory=threading.Event)
    harness_version: str = "unknown"
    agent: Path | None = None            # the winsock-agent every guest's suite calls through
    ssh_connect_timeout: float = 20.0
    reconnect_interval: float = 1.0


@dataclass
class GuestResult:
    guest: str
    template: str
    os_build_config: str
    status: str = "not_run"          # passed, failed, infrastructure, harness, not_run, interrupted
    classification: str | None = None  # None (clean), product, infrastructure, harness, interrupted
    reason: str | None = None        # tests_failed, driver_install, driver_load, bugcheck, hang, ...
    phase: str | None = None
    cause: str = ""
    os_build: str | None = None
    attempts: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    tests: list[dict] = field(default_factory=list)
    test_signing: bool | None = None
    verifier_on: bool | None = None
    verifier_problem: str | None = None
    crash_dumps: bool | None = None
    driver_loaded: bool | None = None
    harness_path: str | None = None
    bugcheck: dict | None = None
    in_flight: dict | None = None    # a guest fault: the call the agent was running when the guest went away
    wfp: bool | None = None          # the guest's Winsock has WFP under it (False: a stand-in's Wine)
    phase_times: dict = field(default_factory=dict)
    clone: str | None = None
    logs: str | None = None
    junit: str | None = None
    capture: str | None = None
    captures: list[str] = field(default_factory=list)
    install: dict = field(default_factory=dict)
    dumps: list[str] = field(default_factory=list)
    analysis: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class _ThreadFilter(logging.Filter):
    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


_LIVE = re.compile(rb" (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
# After a guest drop, how long the test that lost its call may take to report it (it fails as
# soon as its agent session sees the relay end) before pytest is stopped anyway.
DROP_SETTLE_S = 30.0


class GuestAttempt:
    """One attempt of one guest on one fresh clone."""

    def __init__(self, ctx: RunContext, guest: Guest, attempt: int, result: GuestResult) -> None:
        self.ctx = ctx
        self.guest = guest
        self.n = attempt
        self.result = result
        self.os: GuestOs = guest_os_for(guest)
        self.guest_dir = ctx.run_dir / "guests" / guest.name
        self.dir = self.guest_dir / f"attempt-{attempt}"
        self.logs = self.dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.vs: VSphere | None = None
        self.clone: Clone | None = None
        self.ssh: GuestSsh | None = None
        self.boot_id: str | None = None
        self.agent_remote: str | None = None      # the uploaded winsock-agent
        result.wfp = self.os.has_wfp
        self.dumps_before: set[tuple] = set()
        self.rundir = self.os.join(self.os.workdir, f"{ctx.run_id}-a{attempt}")
        self.phase = "start"
        self._phase_no = 0
        self._cmd_no = 0
        self._aborted = False
        self._log_handler: logging.Handler | None = None
        self._driver_touched = False

    # -- helpers ----------------------------------------------------------
    def rel(self, p: Path) -> str:
        return p.relative_to(self.ctx.run_dir).as_posix()

    def _check_cancel(self) -> None:
        if self.ctx.cancel.is_set():
            raise Interrupted("run cancelled")

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        self._check_cancel()
        self.phase = name
        self._phase_no += 1
        handler = logging.FileHandler(self.logs / f"{self._phase_no:02d}-{name}.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_ThreadFilter(threading.get_ident()))
        handler.addFilter(RedactingFilter(self.ctx.registry))
        logging.getLogger().addHandler(handler)
        self.ctx.progress.update(self.guest.name, phase=name, attempt=self.n)
        t0 = time.monotonic()
        log.info("%s: phase %s (attempt %d)", self.guest.name, name, self.n)
        try:
            yield
        finally:
            dt = time.monotonic() - t0
            self.result.phase_times[name] = round(self.result.phase_times.get(name, 0.0) + dt, 3)
            self.ctx.progress.note(f"{self.guest.name:<16} attempt {self.n}  {name:<16} done in {dt:.1f}s")
            logging.getLogger().removeHandler(handler)
            handler.close()

    def _paths(self, tag: str) -> tuple[Path, Path]:
        self._cmd_no += 1
        base = self.logs / f"{self._phase_no:02d}-{self.phase}-{self._cmd_no:03d}{('-' + tag) if tag else ''}"
        return base.with_suffix(".out"), base.with_suffix(".err")

    def sh(self, script: str, *, timeout: float | None = None, tag: str = "") -> ExecResult:
        assert self.ssh is not None
        out, err = self._paths(tag)
        try:
            return self.ssh.run_script(script, timeout=timeout or self.ctx.lab.timeouts.command,
                                       stdout_path=out, stderr_path=err, phase=self.phase)
        except CommandHang as e:
            # Once the driver is on the guest a hang may be the driver's doing;
            # before that it is the template's.  Never retried either way.
            if self._driver_touched:
                raise ProductFailure(f"remote command hung in {self.phase} ({e.timeout:g} s): {e.command}",
                                     phase=self.phase, reason="hang") from None
            raise GuestSetupError(f"remote command hung in {self.phase} ({e.timeout:g} s) before the "
                                  f"driver was installed: {e.command}", phase=self.phase,
                                  vm=self.result.clone) from None

    def win(self, argv: list[str], *, tag: str, timeout: float | None = None) -> ExecResult:
        """One Windows command (``harness.vm.wincmd``), rendered for this guest."""
        return self.sh(self.os.render(argv), timeout=timeout, tag=tag)

    def _endpoint(self, ip: str, host_key: str) -> SshEndpoint:
        g = self.guest
        return SshEndpoint(host=ip, port=g.ssh_port, username=g.account, host_key=host_key,
                           key_file=g.ssh_key_file, key_env=g.ssh_key_env,
                           connect_timeout=min(self.ctx.ssh_connect_timeout, self.ctx.lab.timeouts.ssh),
                           keepalive=5.0, keepalive_count_max=3, shell=self.os.shell,
                           boot_id_path=self.os.boot_id_path)

    def _connect_until(self, deadline: float) -> GuestSsh:
        """Connect, tolerating 'not up yet' until ``deadline``.  Host-key and
        key problems are raised at once: waiting cannot fix them."""
        assert self.vs is not None and self.clone is not None
        last: InfrastructureError | None = None
        while True:
            self._check_cancel()
            ip = self.clone.ip or self.vs.wait_ready(self.clone)
            ssh = GuestSsh(self._endpoint(ip, self.vs.host_key(self.clone)), registry=self.ctx.registry,
                           workdir=self.logs, vm=self.clone.name)
            try:
                return ssh.connect()
            except (ConnectFailed, ConnectionDropped) as e:
                last = e
                ssh.close()
            if time.monotonic() >= deadline:
                assert last is not None
                raise last
            time.sleep(self.ctx.reconnect_interval)

    def abort(self) -> None:
        """From another thread: unblock whatever this attempt waits on."""
        self._aborted = True
        if self.ssh is not None:
            self.ssh.close()

    # -- the state machine ------------------------------------------------
    def run(self) -> None:
        steps: dict[str, Callable[[], None]] = {
            "clone": self.do_clone, "power_on": self.do_power_on, "wait_ready": self.do_wait_ready,
            "connect": self.do_connect, "check_guest": self.do_check_guest, "upload": self.do_upload,
            "install_harness": self.do_install_harness, "install_driver": self.do_install_driver,
            "configure_debug": self.do_configure_debug, "reboot": self.do_reboot,
            "verify_debug": self.do_verify_debug, "capture_start": self.do_capture_start,
            "run_suite": self.do_run_suite, "capture_stop": self.do_capture_stop, "collect": self.do_collect,
        }
        record = {"attempt": self.n, "started": time.time(), "outcome": "running", "classification": None,
                  "phase": None, "cause": "", "logs": self.rel(self.logs)}
        self.result.attempts.append(record)
        self.result.logs = self.rel(self.logs)
        t0 = time.monotonic()
        try:
            try:
                for name in plan(self.ctx.driver is not None, self.guest.suite):
                    if name == "destroy":
                        continue
                    with self._phase(name):
                        steps[name]()
                record["outcome"] = "completed"
            except ProductFailure as e:          # GuestFault too (kind "guest")
                self._fail(record, e, e.kind)
                self._salvage()
            except Interrupted as e:
                self._fail(record, e, "interrupted")
                raise
            except InfrastructureError as e:
                if self.ctx.cancel.is_set() or self._aborted:
                    self._fail(record, Interrupted(f"run cancelled ({e.message})"), "interrupted")
                    raise Interrupted(str(e)) from e
                self._fail(record, e, "infrastructure")
                self._salvage()
                raise
            except Exception as e:
                if self.ctx.cancel.is_set() or self._aborted:
                    self._fail(record, Interrupted(f"run cancelled ({type(e).__name__})"), "interrupted")
                    raise Interrupted(str(e)) from e
                self._fail(record, e, "harness")
                log.error("%s: harness error in %s:\n%s", self.guest.name, self.phase, traceback.format_exc())
                self._salvage()
                raise
        finally:
            record["elapsed"] = round(time.monotonic() - t0, 3)
            self._destroy()

    def _fail(self, record: dict, e: BaseException, cls: str) -> None:
        phase = e.phase if isinstance(e, ProductFailure) else self.phase
        record.update(outcome=cls, classification=cls, phase=phase, cause=self.ctx.registry.redact(str(e)))
        log.error("%s: %s failure in %s: %s", self.guest.name, cls, self.phase, record["cause"])
        if isinstance(e, ProductFailure):
            self.result.reason = e.reason
        if isinstance(e, GuestFault):
            record["in_flight"] = self.result.in_flight = e.in_flight

    # -- phases ------------------------------------------------------------
    def do_clone(self) -> None:
        self.vs = self.ctx.connect_vsphere()
        self.clone = self.vs.clone(self.guest, self.ctx.run_id)
        self.result.clone = self.clone.name

    def do_power_on(self) -> None:
        assert self.vs and self.clone
        self.vs.power_on(self.clone)

    def do_wait_ready(self) -> None:
        assert self.vs and self.clone
        self.vs.wait_ready(self.clone)

    def do_connect(self) -> None:
        self.ssh = self._connect_until(time.monotonic() + self.ctx.lab.timeouts.ssh)
        self.boot_id = self.ssh.boot_id()
        log.info("%s: boot id %s", self.guest.name, self.boot_id)

    def do_check_guest(self) -> None:
        r = self.win(wincmd.reg_query(wincmd.CURRENT_VERSION_KEY), tag="os_build")
        v = wincmd.parse_reg_values(r.stdout) if r.ok else {}
        if "CurrentBuild" in v:
            name = v.get("ProductName", ("", "Windows"))[1]
            ubr = v.get("UBR", ("", None))[1]
            self.result.os_build = f"{name} ({v['CurrentBuild'][1]}{'.' + str(ubr) if ubr is not None else ''})"[:200]
        # The RUNNING boot's options: what bcdedit set is only true after a boot.
        r = self.win(wincmd.reg_query(wincmd.CONTROL_KEY, "SystemStartOptions"), tag="test_signing")
        opts = wincmd.parse_reg_values(r.stdout).get("SystemStartOptions") if r.ok else None
        self.result.test_signing = wincmd.test_signing_active(str(opts[1])) if opts else None
        if self.ctx.driver is not None and self.result.test_signing is not True:
            raise GuestSetupError("test signing is not active in the clone (SystemStartOptions has no TESTSIGNING); "
                                  f"the template {self.guest.template} must be rebuilt with Secure Boot off and "
                                  "bcdedit testsigning on", phase="check_guest", vm=self.result.clone)
        self.dumps_before = {d.key for d in self._list_dumps()}

    def _list_dumps(self) -> list[DumpFile]:
        """MEMORY.DMP and the Minidump folder's *.dmp, by SFTP (no text to parse)."""
        assert self.ssh
        out = []
        mem = self.os.join(self.os.windir, "MEMORY.DMP")
        st = self.ssh.stat(self.os.sftp(mem))
        if st is not None and st.st_size is not None:
            out.append(DumpFile(mem, int(st.st_size), int(st.st_mtime or 0)))
        mini = self.os.join(self.os.windir, "Minidump")
        for e in self.ssh.listdir(self.os.sftp(mini)):
            if e.filename.lower().endswith(".dmp") and e.st_size is not None:
                out.append(DumpFile(self.os.join(mini, e.filename), int(e.st_size), int(e.st_mtime or 0)))
        return out

    def do_upload(self) -> None:
        assert self.ssh
        self.sh(self.os.prepare_rundir(self.rundir, "in", "results"), tag="mkdir").check()
        if self.guest.suite == "guest":        # the controller-side suite needs only the agent on the guest
            self.wheelhouse_remote = self.os.join(self.rundir, "in", "wheelhouse")
            self.ssh.upload_dir(self.ctx.wheelhouse, self.os.sftp(self.wheelhouse_remote))
        drv = self.ctx.driver
        if drv is not None:
            dest = self.os.join(self.rundir, "in", "driver")
            if drv.local.is_dir():
                self.ssh.upload_dir(drv.local, self.os.sftp(dest))
            else:
                self.sh(self.os.prepare_rundir(dest), tag="mkdir_driver").check()
                self.ssh.upload(drv.local, self.os.sftp(self.os.join(dest, drv.local.name)))
            self.driver_remote = dest
        if self.ctx.agent is None:
            raise HarnessError("no winsock-agent was built for this run", phase="upload")
        self.agent_remote = self.os.join(self.rundir, "in", "winsock-agent.exe")
        self.ssh.upload(self.ctx.agent, self.os.sftp(self.agent_remote))
        cfg = {"run_id": self.ctx.run_id, "guest": self.guest.name, "attempt": self.n,
               "harness_version": self.ctx.harness_version, "suite": self.guest.suite,
               "driver": drv.to_dict() if drv else None}
        local_cfg = self.dir / "run-config.json"
        local_cfg.write_text(json.dumps(cfg, indent=1), encoding="utf-8")
        self.ssh.upload(local_cfg, self.os.sftp(self.os.join(self.rundir, "in", "run-config.json")))

    def do_install_harness(self) -> None:
        """A fresh venv from the guest's Python, then the wheelhouse, offline:
        pytest and its dependencies first, then the project wheel."""
        venv = self.os.join(self.rundir, "venv")
        r = self.win([self.os.python, "-m", "venv", venv], tag="venv")
        if not r.ok:
            raise GuestSetupError(f"the guest's Python ({self.os.python}) cannot create a venv (exit {r.exit_code}): "
                                  f"{r.stderr.strip()[-300:]}", phase="install_harness", vm=self.result.clone)
        self.python = self.os.venv_python(venv)
        wh = self.wheelhouse_remote
        pip = [self.python, "-m", "pip", "install", "--no-index", "--find-links", wh, "--disable-pip-version-check"]
        project = check_wheelhouse(self.ctx.wheelhouse).name
        for tag, argv in (("requirements", [*pip, "--only-binary=:all:", "-r", self.os.join(wh, WHEELHOUSE_REQUIREMENTS)]),
                          ("project", [*pip, "--no-deps", self.os.join(wh, project)])):
            r = self.win(argv, tag=tag)
            if not r.ok:
                raise HarnessError(f"installing the wheelhouse on the guest failed ({tag}, exit {r.exit_code}): "
                                   f"{(r.stderr.strip() or r.stdout.strip())[-500:]}", phase="install_harness")
        r = self.win([self.python, "-c", "import harness, pytest; print(pytest.__file__); print(harness.__file__)"],
                     tag="check")
        if not r.ok:
            raise HarnessError(f"the installed harness does not import on the guest (exit {r.exit_code}): "
                               f"{r.stderr.strip()[-500:]}", phase="install_harness")
        self.result.harness_path = r.stdout.strip().splitlines()[-1]

    def do_install_driver(self) -> None:
        drv = self.ctx.driver
        assert drv is not None
        self._driver_touched = True
        # pnputil refuses a test-signed package whose certificate the guest
        # does not trust: Trusted Root (the chain) and Trusted Publisher (no prompt).
        for cer in drv.certificates:
            path = self.os.join(self.driver_remote, *cer.split("/"))
            for store in ("Root", "TrustedPublisher"):
                r = self.win(wincmd.certutil_addstore(store, path), tag=f"cert-{store}")
                if not r.ok:
                    raise ProductFailure(f"the package's certificate {cer} was not imported into {store} "
                                         f"(certutil {wincmd.code_text(r.exit_code)})",
                                         phase="install_driver", reason="driver_install")
        if not drv.certificates:
            self.result.notes.append("the driver package ships no .cer: pnputil accepts it only if the guest "
                                     "already trusts its signer")
        r = self.win(wincmd.pnputil_add_install(self.os.join(self.driver_remote, drv.inf or "")), tag="pnputil")
        o = wincmd.pnputil_outcome(r.exit_code)
        self.result.install = {"pnputil_exit": r.exit_code, "meaning": o.meaning}
        log.info("%s: pnputil: %s", self.guest.name, o.meaning)
        if not o.ok:
            raise ProductFailure(f"driver package did not install: {o.meaning}: "
                                 f"{(r.stdout.strip() or r.stderr.strip())[-300:]}",
                                 phase="install_driver", reason="driver_install")
        if o.reboot:
            self.result.notes.append(f"pnputil: {o.meaning}; rebooted before starting the driver")
            self._reboot("pnputil asked for a restart")
        self._start_driver("after install")

    def _start_driver(self, when: str) -> None:
        """The INF's StartType is demand start (3): nothing starts the driver
        at boot, so the lab starts it after install and after every reboot."""
        drv = self.ctx.driver
        assert drv is not None
        r = self.win(wincmd.sc_start(drv.service), tag="sc_start")
        o = wincmd.sc_start_outcome(r.exit_code)
        if not o.ok:
            raise ProductFailure(f"driver service {drv.service} did not start {when}: {o.meaning}",
                                 phase=self.phase, reason="driver_load" if r.exit_code != 1060 else "driver_install")
        self._check_loaded(when)

    def _check_loaded(self, when: str) -> None:
        drv = self.ctx.driver
        assert drv is not None
        r = self.win(wincmd.sc_query(drv.service), tag="sc_query")
        state = wincmd.parse_sc_state(r.stdout) if r.ok else None
        self.result.driver_loaded = state == wincmd.SERVICE_RUNNING
        if not self.result.driver_loaded:
            raise ProductFailure(f"driver service {drv.service} is not running {when} "
                                 f"(sc query exit {r.exit_code}, state {state})", phase=self.phase,
                                 reason="driver_load")

    def _sys_name(self) -> str:
        drv = self.ctx.driver
        assert drv is not None
        return drv.sys or f"{drv.service}.sys"

    def do_configure_debug(self) -> None:
        if self.ctx.driver is not None:
            r = self.win(wincmd.verifier_standard(self._sys_name()), tag="verifier")
            o = wincmd.verifier_enable_outcome(r.exit_code)
            if not o.ok:
                # The driver never ran yet: the template (Secure Boot, HVCI, policy) refused.
                raise GuestSetupError(f"Driver Verifier refused /standard /driver {self._sys_name()}: {o.meaning}; "
                                      f"check the template {self.guest.template} (Secure Boot/HVCI/policy)",
                                      phase="configure_debug", vm=self.result.clone)
            r = self.win(wincmd.verifier_querysettings(), tag="verifier_next_boot")
            if not (r.ok and wincmd.names_driver(r.stdout, self._sys_name())):
                raise GuestSetupError(f"verifier /querysettings does not list {self._sys_name()} after "
                                      "/standard /driver", phase="configure_debug", vm=self.result.clone)
        r = self.win(wincmd.reg_query(wincmd.CRASH_KEY, "CrashDumpEnabled"), tag="crashdumps")
        cur = wincmd.parse_reg_values(r.stdout).get("CrashDumpEnabled") if r.ok else None
        if not cur or not cur[1]:
            # 2 = kernel memory dump: what driver bugs need (the template's default too).
            self.win(wincmd.reg_add_dword(wincmd.CRASH_KEY, "CrashDumpEnabled", 2), tag="crashdumps_set").check()
        if self.ctx.driver is None:
            self._crash_dump_status()

    def _crash_dump_status(self) -> None:
        r = self.win(wincmd.reg_query(wincmd.CRASH_KEY, "CrashDumpEnabled"), tag="crashdumps_status")
        cur = wincmd.parse_reg_values(r.stdout).get("CrashDumpEnabled") if r.ok else None
        self.result.crash_dumps = bool(cur and cur[1]) if r.ok else None

    def do_reboot(self) -> None:
        self._reboot("Driver Verifier settings take effect at boot")

    def _reboot(self, why: str) -> None:
        assert self.ssh and self.vs and self.clone
        old = self.boot_id
        try:
            # A short delay so the SSH command returns before sshd goes down.
            self.win(["shutdown.exe", "/r", "/t", "3", "/c", f"wfp-harness: {why}"], tag="reboot")
        except (ConnectionDropped, ExitStatusUnknown):
            pass  # the guest went down under the command: that is the point
        self.ssh.close()
        self.ssh = None
        deadline = time.monotonic() + self.ctx.lab.timeouts.reboot
        while True:
            self.clone.ip = None  # re-read after every reboot: DHCP may move the guest
            self.vs.wait_ready(self.clone)
            self.ssh = self._connect_until(deadline)
            self.boot_id = self.ssh.boot_id()
            if self.boot_id != old:
                break
            self.ssh.close()
            self.ssh = None
            if time.monotonic() >= deadline:
                raise GuestSetupError(f"the guest did not reboot within {self.ctx.lab.timeouts.reboot:g} s "
                                      "(boot id unchanged)", phase=self.phase, vm=self.result.clone)
            time.sleep(self.ctx.reconnect_interval)
        log.info("%s: rebooted (%s), new boot id %s", self.guest.name, why, self.boot_id)
        self._check_new_dumps("during the reboot")

    def do_verify_debug(self) -> None:
        self._start_driver("after the reboot")
        # /query shows what is verified NOW; /querysettings only the next boot's plan.
        r = self.win(wincmd.verifier_query(), tag="verifier_active")
        self.result.verifier_on = wincmd.names_driver(r.stdout, self._sys_name()) if r.ok else None
        if not self.result.verifier_on:
            self.result.verifier_problem = (
                f"verifier /query (exit {r.exit_code}) does not list {self._sys_name()} after the reboot: the "
                f"settings were accepted but are not active (template {self.guest.template}: HVCI or policy?)")
            log.error("%s: %s", self.guest.name, self.result.verifier_problem)
        self._crash_dump_status()

    def do_capture_start(self) -> None:
        self.win(wincmd.pktmon_stop(), tag="pktmon_idle")  # a stale session would refuse the start
        self.etl = self.os.join(self.rundir, "results", "capture.etl")
        r = self.win(wincmd.pktmon_start(self.etl), tag="pktmon")
        if not r.ok:
            self.result.notes.append(f"packet capture did not start (pktmon {wincmd.code_text(r.exit_code)})")
            self.etl = None

    def do_run_suite(self) -> None:
        assert self.ssh
        drv = self.ctx.driver
        env = {"WFP_RUN_ID": self.ctx.run_id, "WFP_GUEST": self.guest.name,
               "WFP_DRIVER_INSTALLED": "1" if drv else "0",
               "WFP_DRIVER_VERSION": drv.version if drv else "none"}
        if self.guest.suite == "controller":
            return self._run_suite_here(env)
        self.junit_remote = self.os.join(self.rundir, "results", "junit.xml")
        script = self.os.run_suite(self.python, self.rundir, self.junit_remote, env,
                                   self.agent_remote, self.ctx.lab.run.suite_select)
        out, err = self._paths("suite")
        stop = threading.Event()
        tailer = threading.Thread(target=self._tail, args=(out, stop), daemon=True, name=f"tail-{self.guest.name}")
        tailer.start()
        try:
            r = self.ssh.run_script(script, timeout=self.ctx.lab.timeouts.test_run, stdout_path=out,
                                    stderr_path=err, phase="run_suite")
        except CommandHang as e:
            raise ProductFailure(f"the conformance suite hung ({e.timeout:g} s without finishing)",
                                 phase="run_suite", reason="hang") from None
        except (ConnectionDropped, ExitStatusUnknown, ConnectFailed) as e:
            self._after_drop(e)
            raise
        finally:
            stop.set()
            tailer.join(timeout=5)
        if r.exit_code == 5:
            raise HarnessError("the conformance suite collected no tests (pytest exit 5)", phase="run_suite")
        if r.exit_code not in (0, 1):
            raise HarnessError(f"the conformance suite did not run (pytest exit {r.exit_code}): "
                               f"{(r.stderr.strip() or r.stdout.strip())[-800:]}", phase="run_suite")

    def _run_suite_here(self, env: dict) -> None:
        """The controller-side suite: pytest on this machine, its Winsock calls in the guest's
        agent through the guest's SSH connection (harness.vm.agent_ssh relays each agent
        session).  A drop of the guest under it is a GuestFault naming the call in flight."""
        assert self.ssh and self.agent_remote
        results = self.dir / "results"
        results.mkdir(exist_ok=True)
        drop_record = self.dir / "guest-dropped.json"
        flight = self.dir / "agent-in-flight.jsonl"      # harness.agent.session: requests an agent took with it
        endpoint = agent_ssh.write_endpoint(self.dir / "agent-endpoint.json", self.ssh.endpoint,
                                            command=self.os.agent_exec(self.agent_remote), guest=self.guest.name,
                                            drop_record=drop_record)
        relay = shlex.join([sys.executable, "-m", "harness.vm.agent_ssh", str(endpoint)])
        # rootdir: the folder holding the harness package, so the JUnit ids read
        # harness.conformance.<module>, as from a guest's site-packages (the gate compares ids).
        import harness
        rootdir = Path(harness.__file__).resolve().parents[1]
        argv = [sys.executable, *self.os.suite_args(str(results / "junit.xml"), relay,
                                                    self.ctx.lab.run.suite_select), f"--rootdir={rootdir}"]
        out, err = self._paths("suite")
        log.info("%s: the suite runs here against the guest's agent: %s", self.guest.name, shlex.join(argv))
        stop = threading.Event()
        tailer = threading.Thread(target=self._tail, args=(out, stop), daemon=True, name=f"tail-{self.guest.name}")
        tailer.start()
        try:
            with open(out, "wb") as o, open(err, "wb") as e:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=o, stderr=e, cwd=self.dir,
                                        env={**os.environ, **env, "PYTHONUNBUFFERED": "1",
                                             "WFP_AGENT_FLIGHT_RECORD": str(flight)})
            hung = self._watch_suite(proc, drop_record, out)
        finally:
            stop.set()
            tailer.join(timeout=5)
        junit = results / "junit.xml"
        if junit.is_file():
            self._read_junit(junit)        # local evidence first: the guest may never answer again
        drop = agent_ssh.read_drop(drop_record)
        if drop is not None:
            self._guest_dropped(drop, flight)
        if hung:
            raise ProductFailure(f"the conformance suite hung ({self.ctx.lab.timeouts.test_run:g} s without "
                                 "finishing)", phase="run_suite", reason="hang")
        if proc.returncode == 5:
            raise HarnessError("the conformance suite collected no tests (pytest exit 5)", phase="run_suite")
        if proc.returncode not in (0, 1):
            raise HarnessError(f"the conformance suite did not run (pytest exit {proc.returncode}): "
                               f"{(err.read_text(errors='replace').strip() or out.read_text(errors='replace').strip())[-800:]}",
                               phase="run_suite")

    def _watch_suite(self, proc: subprocess.Popen, drop_record: Path, out: Path) -> bool:
        """Wait for pytest; stop it (SIGINT: it still writes its JUnit) on cancel, past the test_run
        timeout (then True: it hung), or once the guest dropped and the test that lost its call
        has its outcome (the rest of the suite could only fail to reach the guest)."""
        deadline = time.monotonic() + self.ctx.lab.timeouts.test_run
        hung = False
        dropped_at: tuple[int, float] | None = None
        while proc.poll() is None:
            cancelled = self.ctx.cancel.is_set() or self._aborted
            hung = time.monotonic() >= deadline
            if dropped_at is None and drop_record.exists():
                dropped_at = (out.stat().st_size, time.monotonic())
            settled = dropped_at is not None and (
                _LIVE.search(out.read_bytes()[dropped_at[0]:]) is not None
                or time.monotonic() - dropped_at[1] > DROP_SETTLE_S)
            if cancelled or hung or settled:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                if cancelled:
                    raise Interrupted("run cancelled")
                break
            time.sleep(0.2)
        return hung

    def _guest_dropped(self, drop: dict, flight: Path) -> None:
        """The guest went away under the suite: find the call in flight, wait for the guest to come
        back (for its dumps and captures), and raise the GuestFault."""
        in_flight = _in_flight(flight)
        what = (f"{in_flight['call']} (test {in_flight['test']})" if in_flight
                else "no agent call (it went away between calls)")
        log.error("%s: the guest dropped during the suite: %s; in flight: %s", self.guest.name, drop.get("why"), what)
        reason = "guest_dropped"
        if self.ssh is not None:
            self.ssh.close()
        self.ssh = None
        assert self.clone is not None
        self.clone.ip = None
        try:
            self.ssh = self._connect_until(time.monotonic() + self.ctx.lab.timeouts.reboot)
            new = self.ssh.boot_id()
            if new != self.boot_id:
                self.boot_id, reason = new, "bugcheck"
                self.result.bugcheck = {"phase": self.phase, "detected_by": "the guest dropped under the suite "
                                        "and came back with a new boot id", "dumps": [], "summary": ""}
        except InfrastructureError as e:
            log.error("%s: the guest did not answer again after the drop: %s", self.guest.name, e)
            self.ssh = None
            what += "; the guest did not answer again"
        raise GuestFault(f"the guest went away under the suite ({drop.get('why')}); in flight: {what}",
                         phase="run_suite", reason=reason, in_flight=in_flight)

    def _tail(self, path: Path, stop: threading.Event) -> None:
        # Live counts for the progress board from pytest -v lines.
        seen = b""
        while not stop.wait(0.5):
            try:
                seen = path.read_bytes()
            except OSError:
                continue
            ok = bad = 0
            for m in _LIVE.finditer(seen):
                w = m.group(1)
                if w in (b"PASSED", b"XFAIL", b"XPASS"):
                    ok += 1
                elif w in (b"FAILED", b"ERROR"):
                    bad += 1
            self.ctx.progress.update(self.guest.name, passed=ok, failed=bad)

    def _after_drop(self, e: SshError) -> None:
        """SSH died under the suite.  A changed boot id means the guest went
        down (bugcheck): a product failure with dumps.  Same boot id: the
        network or sshd failed, an infrastructure fault (re-raised by caller)."""
        assert self.vs and self.clone
        log.warning("%s: SSH dropped during %s (%s); waiting for the guest", self.guest.name, self.phase, e)
        if self.ssh is not None:
            self.ssh.close()
        self.ssh = None
        deadline = time.monotonic() + self.ctx.lab.timeouts.reboot
        self.clone.ip = None
        self.ssh = self._connect_until(deadline)
        new = self.ssh.boot_id()
        if new == self.boot_id:
            log.warning("%s: same boot id %s: not a reboot", self.guest.name, new)
            return
        self.boot_id = new
        log.error("%s: the guest rebooted during %s (boot id %s): bugcheck suspected",
                  self.guest.name, self.phase, new)
        self.result.bugcheck = {"phase": self.phase, "detected_by": "ssh dropped and boot id changed",
                                "dumps": [], "summary": ""}
        raise ProductFailure(f"the guest rebooted during {self.phase} (SSH dropped, boot id changed): bugcheck",
                             phase=self.phase, reason="bugcheck")

    def _check_new_dumps(self, when: str) -> None:
        new = [d for d in self._list_dumps() if d.key not in self.dumps_before]
        if new:
            self.result.bugcheck = {"phase": self.phase, "detected_by": f"new crash dump {when}",
                                    "dumps": [], "summary": ""}
            raise ProductFailure(f"new crash dump(s) {when}: {', '.join(d.path for d in new)}",
                                 phase=self.phase, reason="bugcheck")

    def do_capture_stop(self) -> None:
        if not getattr(self, "etl", None) or getattr(self, "_capture_stopped", False):
            return
        assert self.ssh
        self._capture_stopped = True
        r = self.win(wincmd.pktmon_stop(), tag="pktmon")
        if not r.ok:
            self.result.notes.append(f"packet capture did not stop (pktmon {wincmd.code_text(r.exit_code)})")
            return
        # multi-file mode numbers its files; convert every one of them.
        results = self.os.join(self.rundir, "results")
        etls = [e.filename for e in self.ssh.listdir(self.os.sftp(results))
                if e.filename.lower().startswith("capture") and e.filename.lower().endswith(".etl")]
        for name in etls:
            out = self.os.join(results, name[:-4] + ".pcapng")
            r = self.win(wincmd.pktmon_etl2pcap(self.os.join(results, name), out), tag="etl2pcap")
            if not r.ok:
                self.result.notes.append(f"pktmon etl2pcap {name} failed ({wincmd.code_text(r.exit_code)})")
        if not etls:
            self.result.notes.append("pktmon stopped but wrote no capture*.etl")

    def do_collect(self) -> None:
        assert self.ssh
        if getattr(self, "_collected", False):
            return
        run = self.ctx.lab.run
        results = self.dir / "results"
        self.ssh.download_dir(self.os.sftp(self.os.join(self.rundir, "results")), results,
                              max_bytes=int(run.max_file_mb * 2**20), max_depth=run.max_depth,
                              max_name_length=run.max_name_length)
        self._collected = True
        junit = results / "junit.xml"
        if junit.is_file():
            self._read_junit(junit)
        caps = sorted(results.glob("capture*.pcapng"))
        self.result.captures = [self.rel(p) for p in caps]
        self.result.capture = self.result.captures[0] if caps else None
        self._collect_dumps()
        if self.result.bugcheck is None and self.result.counts.get("failed", 0) + self.result.counts.get("error", 0):
            raise ProductFailure(f"{self.result.counts['failed']} test(s) failed, "
                                 f"{self.result.counts['error']} error(s)", phase="run_suite", reason="tests_failed")
        if self.result.junit is None and self.result.bugcheck is None:
            raise HarnessError("the suite ran but wrote no JUnit file", phase="collect")
        if self.result.bugcheck is None and not self.result.tests:
            raise HarnessError("the suite ran no tests (empty JUnit file)", phase="collect")

    def _read_junit(self, junit: Path) -> None:
        from harness.vm.redact import scrub_file
        from harness.vm.report import counts, parse_junit
        scrub_file(junit, self.ctx.registry)
        tests = [asdict(t) for t in parse_junit(junit)]
        self.result.tests = tests
        self.result.junit = self.rel(junit)
        self.result.counts = counts(tests)
        self.ctx.progress.update(self.guest.name, passed=self.result.counts["passed"],
                                 failed=self.result.counts["failed"] + self.result.counts["error"])

    def _symbol_path(self) -> str:
        """The driver's own folder first (its PDB ships in the package), then a
        local cache, then whatever the lab adds (run.symbol_path)."""
        parts = []
        drv = self.ctx.driver
        if drv is not None:
            dirs = {posixpath.dirname(p) for p in drv.pdbs} or {""}
            parts += [self.os.join(self.driver_remote, *d.split("/")) if d else self.driver_remote for d in sorted(dirs)]
        parts.append("cache*" + self.os.join(self.rundir, "symcache"))
        if self.ctx.lab.run.symbol_path:
            parts.append(self.ctx.lab.run.symbol_path)
        return ";".join(parts)

    def _collect_dumps(self) -> None:
        new = [d for d in self._list_dumps() if d.key not in self.dumps_before]
        if not new:
            return
        if self.result.bugcheck is None:
            self.result.bugcheck = {"phase": self.phase, "detected_by": "new crash dump after the run",
                                    "dumps": [], "summary": ""}
        dumps = self.guest_dir / "dumps"
        summaries = []
        limit = int(self.ctx.lab.run.max_dump_mb * 2**20)
        for d in new:
            name = re.sub(r"[^A-Za-z0-9._-]", "_", posixpath.basename(d.path.replace("\\", "/")))[:100]
            local = dumps / f"a{self.n}-{name}"
            assert self.ssh

            def progress(done: int, total: int, name: str = name) -> None:
                self.ctx.progress.note(f"{self.guest.name}: {name}: {done / 2**20:.0f} of {total / 2**20:.0f} MiB")
            try:
                self.ssh.download(self.os.sftp(d.path), local, max_bytes=limit, progress=progress)
                self.result.dumps.append(self.rel(local))
                self.result.bugcheck["dumps"].append(self.rel(local))
            except HostileGuest as e:
                # Over the limit: keep the analysis (made on the guest), note why the file is missing.
                self.result.notes.append(f"{name} not downloaded: {e.message}")
            # !analyze -v on the guest, where the dump, the debugger and the driver's PDB are.
            a = self.win(wincmd.cdb_analyze(self.os.cdb, d.path, self._symbol_path()),
                         timeout=self.ctx.lab.timeouts.analyze, tag="cdb")
            text = a.stdout
            s = summarize_analysis(text)
            if not s:
                summaries.append(f"{name}: no !analyze output (cdb exit {a.exit_code}; is the debugger at "
                                 f"{self.os.cdb}?)")
                continue
            analysis = dumps / f"a{self.n}-{name}.analyze.txt"
            analysis.write_text(self.ctx.registry.redact(text), encoding="utf-8")
            self.result.analysis = self.rel(analysis)
            summaries.append(f"{name}:\n{s}")
        self.result.bugcheck["summary"] = self.ctx.registry.redact("\n".join(summaries))
        if self.result.reason != "bugcheck":
            raise ProductFailure(f"crash dump(s) found after the run: {', '.join(d.path for d in new)}",
                                 phase="collect", reason="bugcheck")

    def _salvage(self) -> None:
        """After a failure: stop the capture and fetch what exists.  Best
        effort; a second failure here never hides the first."""
        if self.ctx.cancel.is_set() or self._aborted or self.ssh is None or not self.ssh.is_connected():
            return
        phase = self.phase
        try:
            with self._phase("salvage"):
                try:
                    self.do_capture_stop()
                except Exception as e:
                    log.warning("%s: salvage: capture stop failed: %s", self.guest.name, e)
                try:
                    self.do_collect()
                except ProductFailure as e:
                    if self.result.reason is None:
                        self.result.reason = e.reason
                except Exception as e:
                    log.warning("%s: salvage: collect failed: %s", self.guest.name, e)
        except Interrupted:
            pass
        finally:
            self.phase = phase

    def _destroy(self) -> None:
        if self.ssh is not None:
            self.ssh.close()
        if self.clone is None:
            return
        self.phase = "destroy"
        self.ctx.progress.update(self.guest.name, phase="destroy", attempt=self.n)
        t0 = time.monotonic()
        for attempt in range(2):
            try:
                if attempt:
                    self.vs = self.ctx.connect_vsphere()  # the old session may be what broke
                assert self.vs is not None
                self.vs.destroy(self.clone)
                break
            except InfrastructureError as e:
                log.error("%s: destroying %s failed (%s)%s", self.guest.name, self.clone.name, e,
                          "; the janitor will remove it" if attempt else "; retrying")
                if attempt:
                    self.result.notes.append(f"clone {self.clone.name} not destroyed: {e}")
        self.result.phase_times["destroy"] = round(time.monotonic() - t0, 3)
        if self.vs is not None:
            self.vs.close()


# Requests of the agent's start, not calls of the suite: after a drop every new session dies there.
_NOT_A_CALL = ("waiting for the agent's HELLO",)


def _in_flight(flight: Path) -> dict | None:
    """The first request an agent took with it when its guest went away (harness.agent.session's
    flight record): the call with its arguments and the test (with its phase) that made it."""
    try:
        lines = flight.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines[:1000]:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("call") not in _NOT_A_CALL:
            return {"call": str(entry.get("call"))[:500], "test": str(entry.get("test", ""))[:300]}
    return None
