"""Guest OS adapters: how one guest spells paths and command lines.

The lifecycle (``harness.vm.lifecycle``) decides WHAT to run: Windows
commands built by :mod:`harness.vm.wincmd` (pnputil, verifier, sc, reg,
certutil, pktmon, cdb, shutdown) and Python.  An adapter only renders those
argv lists in the guest's shell language and knows its paths; exit codes
and output are read by the shared code in ``wincmd``.

* :class:`WindowsOs` -- PowerShell, built ONLY with :mod:`harness.vm.powershell`
  (every value is a single-quoted literal), Windows paths.
* :class:`StandInOs` -- a POSIX sshd standing in for Windows in tests and
  demos (``harness.vm.standin``): the SAME argv, quoted for sh, answered by
  the Windows command emulators on the stand-in's PATH.  Its differences:
  POSIX paths, a boot id read from a file, and a Winsock that is Wine 8.0's
  (the uploaded winsock-agent runs under wine64 through ``wine-exe``), so its
  suite takes Wine's profile and reviewed deviations
  (:mod:`harness.vm.wine_guest`), as ``--target wine`` does.

Either way the conformance suite reaches the guest's real Winsock through
the winsock-agent the lab uploads (``--target agent``), on the guest
(``suite = "guest"``) or from the controller over the guest's SSH connection
(``suite = "controller"``, :mod:`harness.vm.agent_ssh`).
"""

from __future__ import annotations

import ntpath
import posixpath
import shlex
from dataclasses import dataclass
from typing import Mapping, Sequence

from harness.vm import powershell
from harness.vm.config import Guest
from harness.vm.powershell import Param, quote_command
from harness.vm.ssh import DEFAULT_BOOT_ID_PATH

EXE_LOADER = "wine-exe"      # how a stand-in runs a .exe (harness.vm.standin installs it on its PATH)

__all__ = ["GuestOs", "WindowsOs", "StandInOs", "DumpFile", "guest_os_for", "summarize_analysis",
           "ANALYSIS_KEYS"]

# Lines of `!analyze -v` worth putting in the report
# (https://learn.microsoft.com/windows-hardware/drivers/debuggercmds/-analyze).
ANALYSIS_KEYS = ("BUGCHECK_CODE", "BUGCHECK_STR", "BUGCHECK_P1", "MODULE_NAME", "IMAGE_NAME",
                 "SYMBOL_NAME", "FAILURE_BUCKET_ID", "DEFAULT_BUCKET_ID", "PROCESS_NAME")


@dataclass(frozen=True)
class DumpFile:
    path: str
    size: int
    mtime: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.path, self.size, self.mtime)


def summarize_analysis(text: str) -> str:
    """The interesting lines of ``!analyze -v`` output, one per key."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        s = line.strip()
        for k in ANALYSIS_KEYS:
            if s.startswith(k + ":") and k not in out:
                out[k] = s[len(k) + 1:].strip()
    return "\n".join(f"{k}: {v}" for k, v in out.items())


class GuestOs:
    name = "abstract"
    shell = "posix"

    def __init__(self, guest: Guest) -> None:
        self.guest = guest

    # -- paths ----------------------------------------------------------
    @property
    def workdir(self) -> str:
        raise NotImplementedError

    @property
    def python(self) -> str:
        raise NotImplementedError

    @property
    def windir(self) -> str:
        """Where MEMORY.DMP and Minidump\\ live."""
        raise NotImplementedError

    @property
    def cdb(self) -> str:
        raise NotImplementedError

    def join(self, *parts: str) -> str:
        raise NotImplementedError

    def venv_python(self, venv: str) -> str:
        raise NotImplementedError

    def sftp(self, path: str) -> str:
        """The path as the guest's SFTP server spells it."""
        return path

    @property
    def boot_id_path(self) -> str:
        return DEFAULT_BOOT_ID_PATH

    # -- command lines ---------------------------------------------------
    def render(self, argv: Sequence[object]) -> str:
        """One program call, quoted for the guest's shell."""
        raise NotImplementedError

    def prepare_rundir(self, rundir: str, *subdirs: str) -> str:
        raise NotImplementedError

    def run_suite(self, python: str, rundir: str, junit: str, env: Mapping[str, str],
                  agent: str | None = None, select: str = "") -> str:
        raise NotImplementedError

    # What the guest's Winsock is, for the suite: extra pytest arguments (profile, deviations),
    # and whether it has WFP under it (a driver installed there can redirect).
    winsock_args: tuple[str, ...] = ()
    has_wfp = True

    def local_agent_command(self, agent: str) -> str:
        """The ``--agent-command`` of a suite running ON the guest: the uploaded agent as a
        local child (shlex-quoted: the agent launcher splits POSIX-style, which would eat a
        Windows path's backslashes)."""
        return shlex.quote(agent)

    def agent_exec(self, agent: str) -> str:
        """The command line, in the guest's SSH shell, that runs the uploaded agent with its
        standard streams on the exec channel (the controller-side suite)."""
        raise NotImplementedError

    def suite_args(self, junit: str, agent_command: str, select: str = "") -> list[str]:
        """pytest's arguments: the conformance suite against the winsock-agent that
        ``agent_command`` starts, the lab's selection (a -k expression), JUnit to ``junit``."""
        return ["-m", "pytest", "--pyargs", "harness.conformance", "--target", "agent",
                "--agent-command", agent_command, *self.winsock_args, *(["-k", select] if select else []),
                f"--junitxml={junit}", "-p", "no:cacheprovider", "-v", "-rs"]

    def suite_argv(self, python: str, junit: str, agent: str | None = None, select: str = "") -> list[str]:
        """pytest on the guest, its real Winsock calls in the uploaded agent."""
        if not agent:
            raise ValueError("the suite needs the winsock-agent's path on the guest")
        return [python, *self.suite_args(junit, self.local_agent_command(agent), select)]


class WindowsOs(GuestOs):
    name = "windows"
    shell = "powershell"
    CDB_DEFAULT = r"C:\Program Files (x86)\Windows Kits\10\Debuggers\x64\cdb.exe"

    @property
    def workdir(self) -> str:
        return self.guest.workdir or r"C:\wfp\runs"

    @property
    def python(self) -> str:
        return self.guest.python or r"C:\Python311\python.exe"

    @property
    def windir(self) -> str:
        return r"C:\Windows"

    @property
    def cdb(self) -> str:
        return self.guest.cdb or self.CDB_DEFAULT

    def join(self, *parts: str) -> str:
        return ntpath.join(*parts)

    def venv_python(self, venv: str) -> str:
        return self.join(venv, "Scripts", "python.exe")

    def sftp(self, path: str) -> str:
        # Windows OpenSSH's SFTP server wants /C:/dir/file.
        p = path.replace("\\", "/")
        return p if p.startswith("/") else "/" + p

    def render(self, argv: Sequence[object]) -> str:
        return quote_command(*argv)  # type: ignore[arg-type]

    def agent_exec(self, agent: str) -> str:
        # The template's sshd runs commands in PowerShell (vm-templates/scripts/bootstrap.ps1
        # DefaultShell); a native program called last, unredirected, keeps the channel's handles.
        return quote_command(agent)

    def prepare_rundir(self, rundir: str, *subdirs: str) -> str:
        dirs = (rundir, *(self.join(rundir, s) for s in subdirs))
        return "\n".join(quote_command("New-Item", Param("-ItemType"), "Directory", Param("-Force"),
                                       Param("-Path"), d) + " | Out-Null" for d in dirs)

    def run_suite(self, python: str, rundir: str, junit: str, env: Mapping[str, str],
                  agent: str | None = None, select: str = "") -> str:
        lines = [quote_command("Set-Location", Param("-LiteralPath"), rundir)]
        for k, v in sorted(env.items()):
            lines.append(quote_command("Set-Item", Param("-Path"), f"Env:{k}", Param("-Value"), v))
        lines.append(self.render(self.suite_argv(python, junit, agent, select)))
        return "\n".join(lines)


class StandInOs(WindowsOs):
    """The Windows steps on a POSIX stand-in (see the module docstring)."""

    name = "standin"
    shell = "posix"
    winsock_args = ("--profile", "wine-8.0", "-p", "harness.vm.wine_guest")
    has_wfp = False                       # Wine has no WFP: no driver redirects there

    @property
    def workdir(self) -> str:
        assert self.guest.workdir
        return self.guest.workdir

    @property
    def python(self) -> str:
        return self.guest.python or "python3"

    @property
    def state(self) -> str:
        return self.guest.state_dir or posixpath.join(self.workdir, "state")

    @property
    def windir(self) -> str:
        return posixpath.join(self.state, "Windows")

    @property
    def cdb(self) -> str:
        return self.guest.cdb or "cdb.exe"

    @property
    def boot_id_path(self) -> str:
        return self.guest.boot_id_path or DEFAULT_BOOT_ID_PATH

    def join(self, *parts: str) -> str:
        return posixpath.join(*parts)

    def venv_python(self, venv: str) -> str:
        return posixpath.join(venv, "bin", "python")

    def sftp(self, path: str) -> str:
        return path

    def render(self, argv: Sequence[object]) -> str:
        return shlex.join(str(a) for a in argv)

    def local_agent_command(self, agent: str) -> str:
        return shlex.join([EXE_LOADER, agent])

    def agent_exec(self, agent: str) -> str:
        return shlex.join([EXE_LOADER, agent])

    def prepare_rundir(self, rundir: str, *subdirs: str) -> str:
        return self.render(["mkdir", "-p", rundir, *(posixpath.join(rundir, s) for s in subdirs)])

    def run_suite(self, python: str, rundir: str, junit: str, env: Mapping[str, str],
                  agent: str | None = None, select: str = "") -> str:
        envs = [f"{k}={v}" for k, v in sorted(env.items())]
        # The stand-in's machine environment (Windows' system variables).
        envfile = shlex.quote(posixpath.join(self.state, "environment"))
        return (f"if [ -f {envfile} ]; then set -a; . {envfile}; set +a; fi\n"
                + self.render(["cd", rundir]) + " && "
                + self.render(["env", *envs, *self.suite_argv(python, junit, agent, select)]))


def guest_os_for(guest: Guest) -> GuestOs:
    return StandInOs(guest) if guest.os == "posix" else WindowsOs(guest)


# Keep the module honest: every Windows script goes through powershell.py.
_ = powershell
