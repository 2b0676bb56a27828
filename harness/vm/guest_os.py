"""Guest OS adapters: the OS-specific steps of the guest lifecycle.

The lifecycle (``harness.vm.lifecycle``) is the same for every guest; what
differs is the text of each command and how its output reads.  An adapter
builds each command as a script in the guest's shell language and parses
the output; it never talks to the guest itself.

* :class:`WindowsOs` -- the real thing: PowerShell built ONLY with
  :mod:`harness.vm.powershell` (every variable value is a single-quoted
  literal), pnputil, bcdedit, verifier, the CrashControl registry key,
  pktmon and cdb.
* :class:`PosixStandInOs` -- a POSIX sshd standing in for Windows in tests
  and demos.  It does the observable equivalent of each step on the stand-in:
  installing copies the package and runs its ``install.sh``; test signing,
  Driver Verifier and crash-dump state live in files under ``state_dir``
  that the *test* controls (``testsigning``, ``verifier_ignore``, dumps
  under ``dumps/``, a ``bin/cdb`` stub); a "reboot" writes a new boot id.
  The conformance suite really runs there, with ``--target sim``.

State directory of the stand-in (``state_dir``, default ``<workdir>/state``)::

    testsigning            "on" or "off" (missing: off)
    verifier_ignore        if present, verifier requests are not honoured
    verifier.requested     written by enable_verifier; becomes
    verifier.active        at the next reboot (unless verifier_ignore)
    crashdump              CrashDumpEnabled value
    installed/<service>    the installed driver's SHA-256
    dumps/MEMORY.DMP, dumps/Minidump/*.dmp
    bin/cdb                optional debugger stub
"""

from __future__ import annotations

import ntpath
import posixpath
import shlex
from dataclasses import dataclass
from typing import Mapping, Sequence

from harness.vm import powershell
from harness.vm.config import Guest
from harness.vm.powershell import Param, quote_command, quote_literal
from harness.vm.ssh import DEFAULT_BOOT_ID_PATH

__all__ = ["GuestOs", "WindowsOs", "PosixStandInOs", "DumpFile", "guest_os_for", "NO_CDB"]

NO_CDB = "WFP_NO_CDB"
# Lines of `!analyze -v` worth putting in the report.
ANALYSIS_KEYS = ("BUGCHECK_CODE", "BUGCHECK_STR", "BUGCHECK_P1", "MODULE_NAME", "IMAGE_NAME",
                 "SYMBOL_NAME", "FAILURE_BUCKET_ID", "DEFAULT_BUCKET_ID", "PROCESS_NAME")


@dataclass(frozen=True)
class DumpFile:
    path: str
    size: int
    mtime: str

    @property
    def key(self) -> tuple[str, int, str]:
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
    """Builds scripts for one guest; ``shell`` selects the SSH shell dialect."""

    name = "abstract"
    shell = "posix"
    target = "sim"

    def __init__(self, guest: Guest) -> None:
        self.guest = guest

    # -- paths ----------------------------------------------------------
    @property
    def workdir(self) -> str:
        raise NotImplementedError

    def join(self, *parts: str) -> str:
        raise NotImplementedError

    def sftp(self, path: str) -> str:
        """The path as the guest's SFTP server spells it."""
        return path

    @property
    def boot_id_path(self) -> str:
        return DEFAULT_BOOT_ID_PATH

    # -- parsers shared by both adapters -------------------------------
    @staticmethod
    def parse_dumps(stdout: str) -> list[DumpFile]:
        out = []
        for line in stdout.splitlines():
            parts = line.rstrip("\r").split("\t")
            if len(parts) == 3 and parts[1].isdigit():
                out.append(DumpFile(parts[0], int(parts[1]), parts[2]))
        return out

    @staticmethod
    def parse_flag(stdout: str) -> bool:
        return stdout.strip().lower() in ("on", "yes", "true", "1")


class WindowsOs(GuestOs):
    name = "windows"
    shell = "powershell"
    target = "native"
    CDB_DEFAULT = r"C:\Program Files (x86)\Windows Kits\10\Debuggers\x64\cdb.exe"
    CRASH_KEY = r"HKLM:\SYSTEM\CurrentControlSet\Control\CrashControl"

    @property
    def workdir(self) -> str:
        return self.guest.workdir or r"C:\wfp\runs"

    @property
    def python(self) -> str:
        return self.guest.python or r"C:\Python311\python.exe"

    def join(self, *parts: str) -> str:
        return ntpath.join(*parts)

    def sftp(self, path: str) -> str:
        # Windows OpenSSH's SFTP server wants /C:/dir/file.
        p = path.replace("\\", "/")
        return p if p.startswith("/") else "/" + p

    def mkdirs(self, *dirs: str) -> str:
        return "\n".join(quote_command("New-Item", Param("-ItemType"), "Directory", Param("-Force"),
                                       Param("-Path"), d) + " | Out-Null" for d in dirs)

    def os_build(self) -> str:
        return ("$o = Get-CimInstance -ClassName Win32_OperatingSystem\n"
                "$ubr = (Get-ItemProperty -Path 'HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion').UBR\n"
                "'{0} ({1}.{2})' -f $o.Caption, $o.Version, $ubr")

    def install_harness(self, wheel: str, venv: str) -> tuple[str, str]:
        """(script, python to run the suite with).  Clones are disposable:
        install into the guest's Python, no venv."""
        script = (quote_command(self.python, "-m", "pip", "install", "--no-deps", "--no-index",
                                "--force-reinstall", "--disable-pip-version-check", wheel) + "\n"
                  + quote_command(self.python, "-c", "import harness; print(harness.__file__)"))
        return script, self.python

    def install_driver(self, pkg_dir: str, inf: str | None, service: str) -> str:
        if not inf:
            raise ValueError("a Windows driver package needs exactly one .inf file")
        return (quote_command("pnputil.exe", "/add-driver", self.join(pkg_dir, inf), "/install") + "\n"
                "if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }\n"
                # Non-PnP callout drivers are started by their service, not by a device.
                + quote_command("sc.exe", "start", service))

    def driver_loaded(self, service: str) -> str:
        return quote_command("sc.exe", "query", service)

    @staticmethod
    def parse_driver_loaded(stdout: str) -> bool:
        return any("STATE" in ln and "RUNNING" in ln for ln in stdout.splitlines())

    def test_signing(self) -> str:
        return quote_command("bcdedit.exe", "/enum", "{current}")

    @staticmethod
    def parse_test_signing(stdout: str) -> bool:
        for ln in stdout.splitlines():
            parts = ln.split()
            if len(parts) >= 2 and parts[0].lower() == "testsigning":
                return parts[1].lower() == "yes"
        return False

    def enable_verifier(self, sys_name: str) -> str:
        return quote_command("verifier.exe", "/standard", "/driver", sys_name)

    def verifier_status(self) -> str:
        return quote_command("verifier.exe", "/querysettings")

    @staticmethod
    def parse_verifier(stdout: str, sys_name: str) -> bool:
        # /querysettings lists "Verified drivers:" followed by names; "None" when off.
        lines = [ln.strip() for ln in stdout.splitlines()]
        try:
            i = next(n for n, ln in enumerate(lines) if ln.lower().startswith("verified drivers"))
        except StopIteration:
            return False
        names = " ".join(lines[i:]).lower().replace("verified drivers:", " ").split()
        return sys_name.lower() in names

    def enable_crash_dumps(self) -> str:
        # 2 = kernel memory dump: what driver bugs need (the template's default too).
        return ("$v = " + self._crash_value() + "\n"
                "if (-not $v) {\n  "
                + quote_command("Set-ItemProperty", Param("-Path"), self.CRASH_KEY, Param("-Name"),
                                "CrashDumpEnabled", Param("-Value"), 2, Param("-Type"), "DWord") + "\n}")

    def _crash_value(self) -> str:
        return "(" + quote_command("Get-ItemProperty", Param("-Path"), self.CRASH_KEY, Param("-Name"),
                                   "CrashDumpEnabled") + ").CrashDumpEnabled"

    def crash_dump_status(self) -> str:
        return "$v = " + self._crash_value() + "\nif ($v) { 'on' } else { 'off' }"

    def reboot(self) -> str:
        # A short delay so the SSH command returns before sshd goes down.
        return quote_command("shutdown.exe", "/r", "/t", 3, "/c", "wfp-harness: reboot after enabling Driver Verifier")

    def capture_start(self, etl: str) -> str:
        return (quote_command("pktmon.exe", "stop") + " | Out-Null\n"
                + quote_command("pktmon.exe", "start", "--capture", "--pkt-size", 0, "--file-name", etl))

    def capture_stop(self, etl: str, pcapng: str) -> str:
        return (quote_command("pktmon.exe", "stop") + "\n"
                + quote_command("pktmon.exe", "etl2pcap", etl, "--out", pcapng))

    def run_suite(self, python: str, rundir: str, junit: str, env: Mapping[str, str]) -> str:
        lines = [quote_command("Set-Location", Param("-LiteralPath"), rundir)]
        for k, v in sorted(env.items()):
            lines.append(quote_command("Set-Item", Param("-Path"), f"Env:{k}", Param("-Value"), v))
        lines.append(quote_command(python, "-m", "pytest", "--pyargs", "harness.conformance",
                                   "--target", self.target, f"--junitxml={junit}",
                                   "-p", "no:cacheprovider", "-v"))
        return "\n".join(lines)

    def list_dumps(self) -> str:
        return ("$paths = @(" + quote_literal(r"C:\Windows\MEMORY.DMP") + ")\n"
                "$paths += @(" + quote_command("Get-ChildItem", Param("-Path"), r"C:\Windows\Minidump",
                                                Param("-Filter"), "*.dmp")
                + " -ErrorAction SilentlyContinue | ForEach-Object { $_.FullName })\n"
                "foreach ($p in $paths) { if (Test-Path -LiteralPath $p) {\n"
                "  $i = Get-Item -LiteralPath $p\n"
                "  \"{0}`t{1}`t{2}\" -f $i.FullName, $i.Length, $i.LastWriteTimeUtc.ToString('o') } }")

    def analyze_dump(self, dump: str) -> str:
        return ("$cdb = [Environment]::GetEnvironmentVariable('WFP_CDB', 'Machine')\n"
                "if (-not $cdb) { $cdb = " + quote_literal(self.CDB_DEFAULT) + " }\n"
                "if (Test-Path -LiteralPath $cdb) {\n"
                "  & $cdb " + " ".join(quote_literal(a) for a in ("-z", dump, "-c", "!analyze -v; q")) + "\n"
                "} else { " + quote_literal(NO_CDB) + " }")

    def prepare_rundir(self, rundir: str, *subdirs: str) -> str:
        return self.mkdirs(rundir, *(self.join(rundir, s) for s in subdirs))


class PosixStandInOs(GuestOs):
    name = "posix"
    shell = "posix"
    target = "sim"

    @property
    def workdir(self) -> str:
        assert self.guest.workdir
        return self.guest.workdir

    @property
    def state(self) -> str:
        return self.guest.state_dir or posixpath.join(self.workdir, "state")

    @property
    def boot_id_path(self) -> str:
        return self.guest.boot_id_path or DEFAULT_BOOT_ID_PATH

    @property
    def python(self) -> str:
        return self.guest.python or "python3"

    def join(self, *parts: str) -> str:
        return posixpath.join(*parts)

    def _s(self, *parts: str) -> str:
        return shlex.quote(posixpath.join(self.state, *parts))

    @staticmethod
    def _q(argv: Sequence[object]) -> str:
        return shlex.join(str(a) for a in argv)

    def prepare_rundir(self, rundir: str, *subdirs: str) -> str:
        return self._q(["mkdir", "-p", rundir, *(posixpath.join(rundir, s) for s in subdirs)])

    def os_build(self) -> str:
        return "uname -srm"

    def install_harness(self, wheel: str, venv: str) -> tuple[str, str]:
        py = posixpath.join(venv, "bin", "python")
        # The wheel is pure Python, so installing is unpacking it (PEP 427)
        # into a venv that sees the system's pytest and hypothesis.
        script = "\n".join([
            "set -e",
            self._q(["rm", "-rf", venv]),
            self._q([self.python, "-m", "venv", "--system-site-packages", "--without-pip", venv]),
            "site=$(" + self._q([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]) + ")",
            self._q([py, "-m", "zipfile", "-e", wheel]) + ' "$site"',
            self._q([py, "-c", "import harness; print(harness.__file__)"]),
        ])
        return script, py

    def install_driver(self, pkg_dir: str, inf: str | None, service: str) -> str:
        dest = posixpath.join(self.state, "drivers", service)
        return "\n".join([
            "set -e",
            self._q(["mkdir", "-p", posixpath.join(self.state, "drivers"), posixpath.join(self.state, "installed")]),
            self._q(["rm", "-rf", dest]),
            self._q(["cp", "-R", pkg_dir, dest]),
            # The package's own install step: its exit code is the product's.
            f"if [ -f {shlex.quote(posixpath.join(dest, 'install.sh'))} ]; then "
            f"sh {shlex.quote(posixpath.join(dest, 'install.sh'))} {shlex.quote(self.state)}; fi",
            f"date -u +%FT%TZ > {self._s('installed', service)}",
        ])

    def driver_loaded(self, service: str) -> str:
        return f"test -f {self._s('installed', service)} && echo RUNNING || echo STOPPED"

    @staticmethod
    def parse_driver_loaded(stdout: str) -> bool:
        return stdout.strip() == "RUNNING"

    def test_signing(self) -> str:
        return f"cat {self._s('testsigning')} 2>/dev/null || echo off"

    @staticmethod
    def parse_test_signing(stdout: str) -> bool:
        return stdout.strip().lower() == "on"

    def enable_verifier(self, sys_name: str) -> str:
        return self._q(["printf", "%s\\n", sys_name]) + " > " + self._s("verifier.requested")

    def verifier_status(self) -> str:
        return f"cat {self._s('verifier.active')} 2>/dev/null || true"

    @staticmethod
    def parse_verifier(stdout: str, sys_name: str) -> bool:
        return sys_name.lower() in (ln.strip().lower() for ln in stdout.splitlines())

    def enable_crash_dumps(self) -> str:
        return (f"v=$(cat {self._s('crashdump')} 2>/dev/null || echo 0)\n"
                f"if [ \"$v\" = 0 ]; then echo 2 > {self._s('crashdump')}; fi")

    def crash_dump_status(self) -> str:
        return f"v=$(cat {self._s('crashdump')} 2>/dev/null || echo 0); if [ \"$v\" != 0 ]; then echo on; else echo off; fi"

    def reboot(self) -> str:
        # What a Windows reboot does to the state the harness checks: pending
        # verifier settings take effect, and the boot id changes.
        boot = shlex.quote(self.boot_id_path)
        return "\n".join([
            f"if [ -f {self._s('verifier.requested')} ] && [ ! -e {self._s('verifier_ignore')} ]; then "
            f"cp {self._s('verifier.requested')} {self._s('verifier.active')}; fi",
            f"cat /proc/sys/kernel/random/uuid > {boot}.new && mv {boot}.new {boot}",
        ])

    _PCAPNG = ("import struct,sys\n"
               "def blk(t,b):\n"
               " b+=b'\\0'*(-len(b)%4); n=12+len(b)\n"
               " return struct.pack('<II',t,n)+b+struct.pack('<I',n)\n"
               "shb=struct.pack('<IHHq',0x1A2B3C4D,1,0,-1)\n"
               "idb=struct.pack('<HHI',1,0,0)\n"
               "open(sys.argv[1],'wb').write(blk(0x0A0D0D0A,shb)+blk(1,idb))\n")

    def capture_start(self, etl: str) -> str:
        return f"date -u +%FT%TZ > {shlex.quote(etl)}"

    def capture_stop(self, etl: str, pcapng: str) -> str:
        # The stand-in has no pktmon: it writes an empty but valid pcapng.
        return f"test -f {shlex.quote(etl)}\n" + self._q([self.python, "-c", self._PCAPNG, pcapng])

    def run_suite(self, python: str, rundir: str, junit: str, env: Mapping[str, str]) -> str:
        envs = [f"{k}={v}" for k, v in sorted(env.items())]
        # The stand-in's system environment (like Windows' machine variables).
        envfile = self._s("environment")
        return (f"if [ -f {envfile} ]; then set -a; . {envfile}; set +a; fi\n"
                + self._q(["cd", rundir]) + " && "
                + self._q(["env", *envs, python, "-m", "pytest", "--pyargs", "harness.conformance",
                           "--target", self.target, f"--junitxml={junit}", "-p", "no:cacheprovider", "-v"]))

    def list_dumps(self) -> str:
        d = self._s("dumps")
        return (f"for f in {d}/MEMORY.DMP {d}/Minidump/*.dmp; do "
                "[ -f \"$f\" ] && printf '%s\\t%s\\t%s\\n' \"$f\" \"$(stat -c %s \"$f\")\" \"$(stat -c %Y \"$f\")\"; "
                "done; true")

    def analyze_dump(self, dump: str) -> str:
        cdb = self._s("bin", "cdb")
        return (f"if [ -x {cdb} ]; then {cdb} " + self._q(["-z", dump, "-c", "!analyze -v; q"])
                + f"; else echo {NO_CDB}; fi")


def guest_os_for(guest: Guest) -> GuestOs:
    return PosixStandInOs(guest) if guest.os == "posix" else WindowsOs(guest)


# Keep the module honest: every Windows script goes through powershell.py.
_ = powershell
