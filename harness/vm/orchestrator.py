"""Runs the guest matrix: ``nightly`` (every guest) and ``gate`` (nightly
plus a verdict against a baseline).

* one run id per run, written on every clone (``guestinfo.wfp.run_id`` and
  an expiry), one artifact folder per run, one per guest, one per attempt;
  artifacts are only ever added, never deleted;
* guests run in parallel (``run.parallelism``), each on its own vCenter
  session and SSH connection;
* only infrastructure faults are retried, on a fresh clone, within
  ``run.retries`` and with exponential backoff; a lab-wide fault (vCenter,
  TLS, placement) stops the run early with the original cause;
* Ctrl-C / SIGTERM / an orchestrator crash: workers are told to stop, their
  SSH sessions are closed, and every clone tagged with this run id is
  destroyed before the process exits (``finally``); reports are still written.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, TextIO

from harness.vm import redact
from harness.vm.config import LabConfig
from harness.vm.errors import HarnessError, InfrastructureError, PreflightError
from harness.vm.lifecycle import GuestAttempt, GuestResult, Interrupted, RunContext
from harness.vm.package import DriverPackage, build_wheelhouse, check_wheelhouse, harness_version
from harness.vm.progress import Progress
from harness.vm.report import compute_verdict, load_results, shard_guests, write_reports
from harness.vm.vsphere import TAG_RUN_ID, VSphere

__all__ = ["RunOptions", "Orchestrator", "RunOutcome", "new_run_id", "EXIT"]

log = logging.getLogger(__name__)

EXIT = {"ok": 0, "product": 1, "usage": 2, "infrastructure": 3, "harness": 4, "interrupted": 130}


def new_run_id() -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"



def _build_agent() -> Path:
    """The winsock-agent for the guests (harness.agent.build: mingw-w64, or WFP_AGENT_EXE)."""
    from harness.agent import AgentError
    from harness.agent.build import agent_exe
    try:
        return agent_exe()
    except AgentError as e:
        raise HarnessError(f"the winsock-agent for the guests could not be built: {e}", phase="build_agent") from None

@dataclass
class RunOptions:
    mode: str = "nightly"                 # nightly | gate
    driver: Path | None = None
    driver_service: str | None = None
    wheel: Path | None = None             # the project wheel (the wheelhouse is built around it)
    wheelhouse: Path | None = None        # a ready wheelhouse (see package.build_wheelhouse)
    run_id: str | None = None
    shard: tuple[int, int] | None = None
    parallelism: int | None = None
    artifact_dir: Path | None = None
    baseline: Path | None = None          # gate: a results.json / verdict.json / run dir
    preflight: bool = True
    env: Mapping[str, str] | None = None  # where vCenter credentials are read (default os.environ)
    poll_interval: float = 0.25
    max_poll_interval: float = 5.0
    progress_streams: list[TextIO] = field(default_factory=lambda: [sys.stderr])
    progress_interval: float = 15.0
    progress_listeners: list = field(default_factory=list)  # (guest, GuestStatus) callbacks
    abort_grace: float = 60.0
    reconnect_interval: float = 2.0
    ssh_connect_timeout: float = 20.0


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    exit_code: int
    results: dict
    verdict: dict | None = None


class Orchestrator:
    def __init__(self, lab: LabConfig, options: RunOptions | None = None,
                 registry: redact.SecretRegistry | None = None) -> None:
        self.lab = lab
        self.opt = options or RunOptions()
        if self.opt.mode not in ("nightly", "gate"):
            raise ValueError(f"unknown mode {self.opt.mode!r}")
        if self.opt.mode == "gate" and (self.opt.driver is None or self.opt.baseline is None):
            raise ValueError("gate needs a driver package and a baseline")
        # Usage errors are found here, before anything starts (no clone, no artifact folder).
        self.driver: DriverPackage | None = None
        if self.opt.driver is not None:
            try:
                self.driver = DriverPackage.load(self.opt.driver, service=self.opt.driver_service)
            except (OSError, ValueError) as e:
                raise ValueError(f"--driver {self.opt.driver}: {e}") from None
            if self.driver.inf is None and not self.driver.local.is_file():
                raise ValueError(f"--driver {self.opt.driver}: needs exactly one .inf file")
        self.baseline: dict | None = None
        if self.opt.baseline is not None:
            try:
                self.baseline, _ = load_results(self.opt.baseline)
            except (OSError, ValueError) as e:
                raise ValueError(f"--baseline {self.opt.baseline}: {e}") from None
        if self.opt.wheelhouse is not None:
            check_wheelhouse(self.opt.wheelhouse)
        if self.opt.wheel is not None and not Path(self.opt.wheel).is_file():
            raise ValueError(f"--wheel {self.opt.wheel}: not a file")
        self.registry = registry if registry is not None else redact.SecretRegistry()
        base = self.opt.run_id or new_run_id()
        if self.opt.shard:
            base = f"{base}-s{self.opt.shard[0]}of{self.opt.shard[1]}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}", base):
            raise ValueError(f"run id {base!r}: letters, digits, '.', '_' and '-', at most 48 characters")
        self.run_id = base
        art = self.opt.artifact_dir or lab.run.artifact_dir
        self.run_dir = Path(art) / self.run_id
        if self.run_dir.exists():
            raise ValueError(f"artifact directory {self.run_dir} already exists; artifacts are never "
                             "overwritten: pick another --run-id")
        self.cancel = threading.Event()
        self.progress: Progress | None = None
        self.results: dict[str, GuestResult] = {}
        self.active: dict[str, GuestAttempt] = {}
        self.broken: InfrastructureError | None = None
        self._lock = threading.Lock()
        self._sem = threading.Semaphore(self.opt.parallelism or lab.run.parallelism)

    # -- vCenter sessions ---------------------------------------------------
    def connect_vsphere(self) -> VSphere:
        vs = VSphere(self.lab, env=self.opt.env, poll_interval=self.opt.poll_interval,
                     max_poll_interval=self.opt.max_poll_interval, secrets_registry=self.registry)
        vs.connect()
        return vs

    # -- the run ------------------------------------------------------------
    def run(self) -> RunOutcome:
        self.run_dir.mkdir(parents=True)
        uninstall = redact.install(self.registry)
        run_log = logging.FileHandler(self.run_dir / "run.log", encoding="utf-8")
        run_log.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(levelname)s %(name)s: %(message)s"))
        run_log.addFilter(redact.RedactingFilter(self.registry))
        root, hlog = logging.getLogger(), logging.getLogger("harness")
        old_level = hlog.level
        hlog.setLevel(logging.INFO)
        root.addHandler(run_log)
        progress_file = open(self.run_dir / "progress.log", "a", encoding="utf-8")
        self.progress = Progress([*self.opt.progress_streams, progress_file],
                                 interval=self.opt.progress_interval, registry=self.registry)
        self.progress.listeners.extend(self.opt.progress_listeners)
        self.progress.start()
        old_term = None
        if threading.current_thread() is threading.main_thread():
            old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        started = _now()
        meta: dict = {"run_id": self.run_id, "mode": self.opt.mode, "started": started,
                      "harness_version": harness_version(), "config": str(self.lab.source),
                      "shard": list(self.opt.shard) if self.opt.shard else None,
                      "guests_selected": [], "driver": None, "stopped_early": None, "interrupted": False}
        main_vs: VSphere | None = None
        try:
            try:
                names = shard_guests([g.name for g in self.lab.guests], self.opt.shard)
                meta["guests_selected"] = names
                for n in names:
                    g = self.lab.guest(n)
                    self.results[n] = GuestResult(guest=n, template=g.template, os_build_config=g.os_build)
                    self.progress.update(n, phase="queued")
                self._write_json("run.json", meta)
                driver = self.driver
                meta["driver"] = driver.to_dict() if driver else None
                self.progress.note(f"run {self.run_id}: {len(names)} guest(s), artifacts in {self.run_dir}")
                try:
                    main_vs = self.connect_vsphere()
                    if self.opt.preflight:
                        self._preflight(main_vs)
                except InfrastructureError as e:
                    self._stop_early(e)
                if self.broken is None and names:
                    wheelhouse = self.opt.wheelhouse
                    if wheelhouse is None and any(self.lab.guest(n).suite == "guest" for n in names):
                        self.progress.note("building the guest wheelhouse (project wheel + pytest, offline install)")
                        wheelhouse = build_wheelhouse(self.run_dir / "wheelhouse",
                                                      project_wheel=Path(self.opt.wheel) if self.opt.wheel else None)
                    self.progress.note("building the winsock-agent (mingw-w64) the guests' suites call through")
                    agent = _build_agent()
                    ctx = RunContext(lab=self.lab, run_id=self.run_id, run_dir=self.run_dir, agent=agent,
                                     registry=self.registry, wheelhouse=Path(wheelhouse or self.run_dir / "wheelhouse"),
                                     driver=driver,
                                     progress=self.progress, connect_vsphere=self.connect_vsphere,
                                     cancel=self.cancel, harness_version=meta["harness_version"],
                                     ssh_connect_timeout=self.opt.ssh_connect_timeout,
                                     reconnect_interval=self.opt.reconnect_interval)
                    self._run_workers(ctx, [n for n in names if self.results[n].status == "not_run"])
            except KeyboardInterrupt:
                self._interrupt(meta)
            except (HarnessError, OSError, ValueError) as e:
                # e.g. the wheel did not build, the driver package is unreadable
                log.error("run could not start: %s", e)
                for r in self.results.values():
                    if r.status == "not_run":
                        r.status, r.classification, r.phase = "harness", "harness", getattr(e, "phase", "setup")
                        r.cause = self.registry.redact(f"run could not start: {e}")
            finally:
                self._cleanup(main_vs)
            meta["finished"] = _now()
            return self._report(meta)
        except KeyboardInterrupt:  # a second Ctrl-C during clean-up: still write what we have
            self._interrupt(meta)
            meta["finished"] = _now()
            return self._report(meta)
        finally:
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            self.progress.stop()
            progress_file.close()
            root.removeHandler(run_log)
            run_log.close()
            hlog.setLevel(old_level)
            uninstall()
            redact.scrub_tree(self.run_dir, self.registry)

    def _interrupt(self, meta: dict) -> None:
        meta["interrupted"] = True
        self.cancel.set()
        log.error("interrupted: stopping every guest and destroying this run's clones")
        if self.progress:
            self.progress.note("interrupted: destroying clones of this run")
        with self._lock:
            active = list(self.active.values())
        for a in active:
            a.abort()

    def _stop_early(self, e: InfrastructureError) -> None:
        with self._lock:
            if self.broken is None:
                self.broken = e
        log.error("lab broken, stopping early: %s", e)
        if self.progress:
            self.progress.note(f"lab broken, stopping early: {self.registry.redact(str(e))}")
        for r in self.results.values():
            if r.status == "not_run" and not r.attempts:
                r.classification = "infrastructure"
                r.phase = e.phase
                r.cause = self.registry.redact(f"not run: lab broken: {e}")

    def _preflight(self, vs: VSphere) -> None:
        rep = vs.preflight()
        self._write_json("preflight.json", rep.to_dict())
        if rep.problems:
            raise PreflightError("; ".join(rep.problems))
        for t in rep.templates:
            r = self.results.get(t.guest)
            if r is not None and t.problems:
                r.status, r.classification, r.phase = "infrastructure", "infrastructure", "preflight"
                r.cause = self.registry.redact("pre-flight: " + "; ".join(t.problems))

    def _run_workers(self, ctx: RunContext, names: list[str]) -> None:
        threads = [threading.Thread(target=self._worker, args=(ctx, n), name=f"guest-{n}", daemon=True)
                   for n in names]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
        except KeyboardInterrupt:
            self.cancel.set()
            with self._lock:
                active = list(self.active.values())
            for a in active:
                a.abort()
            deadline = time.monotonic() + self.opt.abort_grace
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            raise

    def _worker(self, ctx: RunContext, name: str) -> None:
        guest = self.lab.guest(name)
        result = self.results[name]
        with self._sem:
            attempt = 0
            while True:
                attempt += 1
                if self.cancel.is_set():
                    self._finish(result, "interrupted", "interrupted", "run cancelled before this attempt")
                    break
                if self.broken is not None:
                    self._finish(result, "not_run", "infrastructure", f"not run: lab broken: {self.broken}")
                    break
                a = GuestAttempt(ctx, guest, attempt, result)
                with self._lock:
                    self.active[name] = a
                try:
                    a.run()
                    rec = result.attempts[-1]
                    if rec["classification"] in ("product", "guest"):
                        self._finish(result, "failed", rec["classification"], rec["cause"], rec["phase"])
                    else:
                        self._finish(result, "passed", None, "")
                    break
                except Interrupted:
                    self._finish(result, "interrupted", "interrupted", "run cancelled")
                    break
                except InfrastructureError as e:
                    if e.lab_wide:
                        self._stop_early(e)
                    last = attempt > self.lab.run.retries or not e.retryable or e.lab_wide or self.cancel.is_set()
                    if last:
                        why = ("" if e.retryable else " (not retryable)") if attempt == 1 else \
                            f" (after {attempt} attempts)"
                        self._finish(result, "infrastructure", "infrastructure", f"{e}{why}", e.phase)
                        break
                    delay = min(self.lab.run.retry_backoff * 2 ** (attempt - 1), self.lab.run.retry_backoff_max)
                    log.warning("%s: infrastructure fault, attempt %d of %d; retrying in %.1f s on a fresh clone",
                                name, attempt, self.lab.run.retries + 1, delay)
                    ctx.progress.note(f"{name}: infrastructure fault in {e.phase}; retry in {delay:g} s")
                    if self.cancel.wait(delay):
                        continue  # loop notices the cancel
                except Exception as e:  # harness bug: never retried
                    self._finish(result, "harness", "harness", f"{type(e).__name__}: {e}",
                                 result.attempts[-1]["phase"] if result.attempts else None)
                    break
                finally:
                    with self._lock:
                        self.active.pop(name, None)
        ctx.progress.update(name, phase="done", outcome=f"{result.status}"
                            + (f" ({result.classification})" if result.classification else ""))

    def _finish(self, r: GuestResult, status: str, cls: str | None, cause: str, phase: str | None = None) -> None:
        r.status, r.classification = status, cls
        r.cause = self.registry.redact(cause)
        r.phase = phase if phase is not None else (r.attempts[-1]["phase"] if r.attempts else None)
        if status == "passed":
            r.reason = None
        gdir = self.run_dir / "guests" / r.guest
        gdir.mkdir(parents=True, exist_ok=True)
        redact.write_scrubbed(gdir / "result.json", json.dumps(r.to_dict(), indent=1, default=str), self.registry)

    def _cleanup(self, main_vs: VSphere | None) -> None:
        """Destroy every clone of this run still in vCenter (workers destroy
        their own; this catches the rest after a crash or Ctrl-C)."""
        vs = main_vs
        try:
            if vs is None or vs.si is None:
                if self.broken is not None and not self.broken.retryable:
                    return  # we never got in (wrong CA, no credentials): nothing can exist
                vs = self.connect_vsphere()
            rep = vs.janitor(run_id=self.run_id, now=_dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc))
            if rep.destroyed:
                log.warning("clean-up destroyed %d leftover clone(s) of run %s: %s", len(rep.destroyed),
                            self.run_id, ", ".join(rep.destroyed))
            for name, err in rep.failed.items():
                log.error("clean-up could not destroy %s: %s (expiry tag set; `wfp-harness lab janitor` "
                          "will remove it)", name, err)
        except InfrastructureError as e:
            log.error("clean-up could not reach vCenter: %s; clones of run %s carry %s and an expiry, "
                      "run `wfp-harness lab janitor --run-id %s`", e, self.run_id, TAG_RUN_ID, self.run_id)
        finally:
            if vs is not None:
                vs.close()

    # -- results --------------------------------------------------------------
    def _write_json(self, name: str, data: dict) -> None:
        redact.write_scrubbed(self.run_dir / name, json.dumps(data, indent=1, default=str), self.registry)

    def _report(self, meta: dict) -> RunOutcome:
        interrupted = meta.get("interrupted") or self.cancel.is_set()
        if self.broken is not None:
            meta["stopped_early"] = self.registry.redact(str(self.broken))
        for r in self.results.values():
            if r.status == "not_run" and interrupted:
                r.status, r.classification = "interrupted", "interrupted"
                r.cause = r.cause or "run interrupted before this guest finished"
            if r.status == "not_run" and not r.classification and self.broken is not None:
                r.classification = "infrastructure"
                r.cause = self.registry.redact(f"not run: lab broken: {self.broken}")
        results = dict(meta)
        results["guests"] = [self.results[n].to_dict() for n in sorted(self.results)]
        verdict = None
        if self.opt.mode == "gate":
            verdict = compute_verdict(results, self.baseline, driver=meta.get("driver"))
            if interrupted:
                verdict["verdict"] = "inconclusive"
                verdict["reasons"].insert(0, "run interrupted")
        write_reports(results, self.run_dir, verdict=verdict, registry=self.registry)
        code = self._exit_code(results, verdict, interrupted)
        log.info("run %s finished: exit %d", self.run_id, code)
        if self.progress:
            self.progress.note(f"run {self.run_id} finished (exit {code}); report: {self.run_dir / 'report.md'}")
        return RunOutcome(self.run_id, self.run_dir, code, results, verdict)

    @staticmethod
    def _exit_code(results: dict, verdict: dict | None, interrupted: bool) -> int:
        if interrupted:
            return EXIT["interrupted"]
        if verdict is not None:
            return {"pass": 0, "fail": EXIT["product"]}.get(verdict["verdict"], EXIT["infrastructure"])
        statuses = {g["status"] for g in results["guests"]}
        classes = {g.get("classification") for g in results["guests"]}
        if "failed" in statuses:
            return EXIT["product"]
        if "harness" in classes:
            return EXIT["harness"]
        if classes & {"infrastructure"} or "not_run" in statuses or not results["guests"]:
            return EXIT["infrastructure"]
        return EXIT["ok"]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _raise_interrupt(signum, frame):  # SIGTERM behaves like Ctrl-C: clean up, then exit
    raise KeyboardInterrupt(f"signal {signum}")
