"""``main()``: run / service / install / uninstall.

A startup failure prints one line, ``python -m harness.proxy_service: <reason>``,
on stderr and exits non-zero (1: could not start; 2: usage, or Windows
required; 3: the loop failed after a good start).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from . import core, options

LOG = logging.getLogger("harness.proxy_service")
IS_WINDOWS = sys.platform == "win32"


def configure_logging(log_file: str | None, *, console: bool, verbose: bool = False) -> logging.Logger:
    LOG.setLevel(logging.DEBUG if verbose else logging.INFO)
    LOG.propagate = False
    for handler in list(LOG.handlers):
        LOG.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    if console and sys.stderr is not None:       # a service has no console: sys.stderr is None
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(fmt)
        handler.addFilter(lambda record: getattr(record, "console", True))
        LOG.addHandler(handler)
    if log_file:
        try:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            raise core.StartupError(f"cannot open the log file {log_file}: {exc.strerror or exc}") from None
        handler.setFormatter(fmt)
        LOG.addHandler(handler)
    if not LOG.handlers:
        LOG.addHandler(logging.NullHandler())
    return LOG


def fail(exc: core.StartupError) -> int:
    """The one-line message of a failed start."""
    line = " ".join(str(exc).split())
    if sys.stderr is not None:
        print(f"{options.PROG}: {line}", file=sys.stderr)
    LOG.error("%s", line, extra={"console": False})    # the file log only: stderr has the line already
    return exc.exit_code


# --- run (console) ------------------------------------------------------------------------
class _Interrupts:
    """Ctrl-C / Ctrl-Break set ``stop``: SetConsoleCtrlHandler on Windows,
    Python signal handlers otherwise."""

    def __init__(self, stop: threading.Event, done: threading.Event, fns=None):
        self.stop, self.done, self.fns = stop, done, fns
        self.console = None
        self.previous = {}

    def __enter__(self):
        if self.fns is not None:
            from . import win32
            self.console = win32.ConsoleControl(self.fns, self.stop, self.done)
            self.console.install()
        elif threading.current_thread() is threading.main_thread():
            for name in ("SIGINT", "SIGBREAK", "SIGTERM"):
                sig = getattr(signal, name, None)
                if sig is not None:
                    self.previous[sig] = signal.signal(sig, lambda *_: self.stop.set())
        return self

    def __exit__(self, *exc):
        self.done.set()
        if self.console is not None:
            self.console.remove()
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def run(args, config: core.ProxyConfig) -> int:
    stop, done = threading.Event(), threading.Event()
    fns = None
    try:
        configure_logging(args.log, console=True, verbose=args.verbose)
        if args.target == "sim":
            from .targets import SimTarget
            target = SimTarget(config, demo=args.demo or 0, profile=args.profile, stop=stop)
        else:
            if args.target == "agent" and not IS_WINDOWS:
                raise core.StartupError(
                    f"Windows is required for --target agent (this is {sys.platform!r}); use `run --target wine` "
                    f"for the same proxy over Wine's Winsock, or `run --target sim` in the simulator",
                    exit_code=core.EXIT_USAGE)
            from .targets import AgentTarget, no_driver_here
            if config.register_policy and not IS_WINDOWS:
                raise no_driver_here()            # before the agent starts
            if IS_WINDOWS:
                from . import win32
                fns = win32.load()
            target = AgentTarget(args.target, agent=args.agent, fns=fns)
        session = core.ProxySession(target, config, LOG).start()
    except core.StartupError as exc:
        return fail(exc)
    code = core.EXIT_OK
    with _Interrupts(stop, done, fns):
        LOG.info("serving; Ctrl-C or Ctrl-Break stops")
        try:
            session.serve(stop)
        except Exception:
            LOG.exception("proxy loop failed")
            code = core.EXIT_RUNTIME
        finally:
            session.close()
    stats = session.proxy.stats
    print(f"{config.name} stats: {core.format_stats(stats)}", flush=True)
    demo = getattr(target, "demo", None)
    if demo is not None:
        print(f"demo: {len(demo.results)}/{demo.count} connections made, {demo.intact} echoed intact, "
              f"{stats.forwarded} forwarded by the proxy"
              + (" (timed out)" if target.timed_out else ""), flush=True)
        for i, (ok, error) in enumerate(demo.results, 1):
            if not ok:
                print(f"demo: connection {i} failed: {error or 'echo differs'}", flush=True)
        if code == core.EXIT_OK and not (demo.intact == demo.count and stats.forwarded == demo.count):
            code = core.EXIT_STARTUP
    return code


# --- service --------------------------------------------------------------------------
def service(args, config: core.ProxyConfig) -> int:
    try:
        configure_logging(args.log, console=False, verbose=args.verbose)
        from . import win32
        fns = win32.load()
    except core.StartupError as exc:
        return fail(exc)
    from .targets import AgentTarget

    def body(machine):
        LOG.info("service %s starting (pid %d)", args.name, os.getpid())
        return core.run_service(
            machine, lambda progress: core.ProxySession(AgentTarget("agent", args.agent, fns), config, LOG,
                                                        progress), LOG)

    host = win32.ServiceHost(fns, args.name, body)
    try:
        code = host.dispatch()
    except core.StartupError as exc:
        return fail(exc)
    LOG.info("service %s stopped (exit code %d)", args.name, code)
    return code


# --- install / uninstall -------------------------------------------------------------
def install(args, config: core.ProxyConfig) -> int:
    configure_logging(None, console=True, verbose=args.verbose)
    package_dir = Path(__file__).resolve().parents[1]
    try:
        plan = options.plan_install(
            args, config, executable=sys.executable,
            base_executable=getattr(sys, "_base_executable", sys.executable), prefix=sys.prefix,
            base_prefix=sys.base_prefix, package_root=str(package_dir.parent),
            program_data=os.environ.get("ProgramData", r"C:\ProgramData"))
    except ValueError as exc:
        return fail(core.StartupError(str(exc), exit_code=core.EXIT_USAGE))
    try:
        from . import win32
        fns = win32.load()
        refuse_writable_code(fns, plan, package_dir)
        win32.ServiceManager(fns).install(plan, start=args.start)
    except core.StartupError as exc:
        return fail(exc)
    print(f"installed service {plan.service_name} ({'auto' if plan.start_type == 2 else 'demand'} start)")
    print(f"  account:      {plan.account_why}")
    print(f"  command line: {plan.command_line}")
    print(f"  environment:  {'; '.join(plan.environment)}")
    if plan.dependencies:
        print(f"  depends on:   {', '.join(plan.dependencies)}")
    print(f"  log:          {plan.log}")
    if not args.start:
        print(f"start it with: sc.exe start {plan.service_name}")
    return core.EXIT_OK


def refuse_writable_code(fns, plan, package_dir: Path) -> None:
    """StartupError (exit 2) when a non-administrator may change code the service would load."""
    from . import win32
    files = sorted(str(p) for p in package_dir.rglob("*.py"))
    entries = win32.code_security(fns, options.code_paths(plan, str(package_dir), files))
    me = win32.installer_sid(fns)
    problems = options.audit(entries, options.TRUSTED_SIDS | ({me} if me else set()))
    if problems:
        more = f" (and {len(problems) - 1} more: run with -v)" if len(problems) > 1 else ""
        for problem in problems:
            LOG.debug("writable: %s", problem)
        raise core.StartupError(f"refusing to install: {problems[0]}{more}; the service would run that code as "
                                f"{plan.account or 'LocalSystem'}", exit_code=core.EXIT_USAGE)


def uninstall(args) -> int:
    configure_logging(None, console=True, verbose=args.verbose)
    try:
        from . import win32
        win32.ServiceManager(win32.load()).uninstall(args.name)
    except core.StartupError as exc:
        return fail(exc)
    print(f"uninstalled service {args.name}")
    return core.EXIT_OK


def main(argv=None) -> int:
    args, config = options.parse(argv)
    if args.command == "run":
        return run(args, config)
    if args.command == "service":
        return service(args, config)
    if args.command == "install":
        return install(args, config)
    return uninstall(args)
