"""Windows commands the lab sends to a guest: argv builders, their documented
exit codes and locale-independent readers of their output.

ONE place for each rule, shared by every guest adapter: :class:`WindowsOs`
renders these argv lists as PowerShell, the stand-in renders the same argv
lists as sh and answers them with its emulator (``harness/vm/winemu.py``),
so the exit-code handling and the parsers below run end to end in tests.

Nothing here reads localized text: decisions rest on exit codes, numeric
state codes, registry data (``reg.exe`` prints value names, types and data
as stored) and file names.  Sources (each function cites its page):

* pnputil return values: https://learn.microsoft.com/windows-hardware/drivers/devtest/pnputil-return-values
* verifier command line (return codes, /query vs /querysettings):
  https://learn.microsoft.com/windows-hardware/drivers/devtest/verifier-command-line
* sc.exe query / start: https://learn.microsoft.com/windows-server/administration/windows-commands/sc-query
  and https://learn.microsoft.com/windows-server/administration/windows-commands/sc-start
* service states (SERVICE_STATUS.dwCurrentState):
  https://learn.microsoft.com/windows/win32/api/winsvc/ns-winsvc-service_status
* system error codes 1056/1060: https://learn.microsoft.com/windows/win32/debug/system-error-codes--1000-1299-
* reg query / reg add: https://learn.microsoft.com/windows-server/administration/windows-commands/reg-query
* certutil -addstore: https://learn.microsoft.com/windows-server/administration/windows-commands/certutil#-addstore
* pktmon start (log modes): https://learn.microsoft.com/windows-server/administration/windows-commands/pktmon-start
* pktmon etl2pcap: https://learn.microsoft.com/windows-server/administration/windows-commands/pktmon-etl2pcap
* cdb options (-z, -y, -c): https://learn.microsoft.com/windows-hardware/drivers/debugger/cdb-command-line-options
* !analyze: https://learn.microsoft.com/windows-hardware/drivers/debuggercmds/-analyze
* test signing: https://learn.microsoft.com/windows-hardware/drivers/install/the-testsigning-boot-configuration-option
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ERROR_SUCCESS", "ERROR_NO_MORE_ITEMS", "ERROR_SUCCESS_REBOOT_REQUIRED", "ERROR_SUCCESS_REBOOT_INITIATED",
    "ERROR_SERVICE_ALREADY_RUNNING", "ERROR_SERVICE_DOES_NOT_EXIST", "VERIFIER_SUCCESS", "VERIFIER_ERROR",
    "VERIFIER_REBOOT_NEEDED", "SERVICE_STOPPED", "SERVICE_RUNNING", "Outcome", "code_text",
    "pnputil_add_install", "pnputil_outcome", "verifier_standard", "verifier_enable_outcome", "verifier_query",
    "verifier_querysettings", "names_driver", "sc_start", "sc_start_outcome", "sc_query", "parse_sc_state",
    "reg_query", "reg_add_dword", "parse_reg_values", "test_signing_active", "certutil_addstore",
    "pktmon_stop", "pktmon_start", "pktmon_etl2pcap", "cdb_analyze", "CRASH_KEY", "CONTROL_KEY",
    "CURRENT_VERSION_KEY", "PKTMON_FILE_SIZE_MB",
]

# Win32 error codes (winerror.h) the lab reads back as exit codes.
ERROR_SUCCESS = 0
ERROR_NO_MORE_ITEMS = 259
ERROR_SUCCESS_REBOOT_INITIATED = 1641
ERROR_SUCCESS_REBOOT_REQUIRED = 3010
ERROR_SERVICE_ALREADY_RUNNING = 1056
ERROR_SERVICE_DOES_NOT_EXIST = 1060

# verifier.exe "Return Codes" (verifier-command-line page).
VERIFIER_SUCCESS = 0
VERIFIER_ERROR = 1
VERIFIER_REBOOT_NEEDED = 2

# SERVICE_STATUS.dwCurrentState.
SERVICE_STOPPED = 1
SERVICE_START_PENDING = 2
SERVICE_STOP_PENDING = 3
SERVICE_RUNNING = 4

CRASH_KEY = r"HKLM\SYSTEM\CurrentControlSet\Control\CrashControl"
CONTROL_KEY = r"HKLM\SYSTEM\CurrentControlSet\Control"
CURRENT_VERSION_KEY = r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion"

# pktmon's default log is 512 MB *circular*: a long run overwrites its own
# first packets.  multi-file keeps every file (pktmon-start page, "Logging modes").
PKTMON_FILE_SIZE_MB = 512


def code_text(code: int) -> str:
    """``3010 (0xBC2)``; negative HRESULTs as their unsigned hex."""
    return f"{code} (0x{code & 0xFFFFFFFF:X})"


@dataclass(frozen=True)
class Outcome:
    """What an exit code means for the lab: ``ok`` (go on), ``reboot`` (ok,
    but only after a restart), ``nothing`` (ok, nothing was done), or not ok."""

    ok: bool
    meaning: str
    reboot: bool = False
    nothing: bool = False


# -- pnputil ------------------------------------------------------------------

def pnputil_add_install(inf: str) -> list[str]:
    # One INF per call: the pnputil-return-values page recommends it to get an
    # actionable return value.
    return ["pnputil.exe", "/add-driver", inf, "/install"]


def pnputil_outcome(code: int) -> Outcome:
    """pnputil-return-values: 0 success; 3010 success, restart required;
    1641 success, restart in progress; 259 no device matched (or a better
    driver is already installed) -- the package is in the driver store."""
    if code == ERROR_SUCCESS:
        return Outcome(True, "added and installed")
    if code == ERROR_SUCCESS_REBOOT_REQUIRED:
        return Outcome(True, "installed; a restart is required to finish (3010)", reboot=True)
    if code == ERROR_SUCCESS_REBOOT_INITIATED:
        return Outcome(True, "installed; a restart was started (1641)", reboot=True)
    if code == ERROR_NO_MORE_ITEMS:
        return Outcome(True, "added; no device matched the package (259)", nothing=True)
    return Outcome(False, f"pnputil failed with {code_text(code)} (see %windir%\\inf\\setupapi.dev.log)")


# -- Driver Verifier ----------------------------------------------------------

def verifier_standard(sys_name: str) -> list[str]:
    return ["verifier.exe", "/standard", "/driver", sys_name]


def verifier_enable_outcome(code: int) -> Outcome:
    """0 EXIT_CODE_SUCCESS, 1 EXIT_CODE_ERROR, 2 EXIT_CODE_REBOOT_NEEDED:
    new settings were written and take effect at the next boot."""
    if code == VERIFIER_REBOOT_NEEDED:
        return Outcome(True, "settings saved; active after the next boot (2)", reboot=True)
    if code == VERIFIER_SUCCESS:
        return Outcome(True, "settings unchanged (0)", reboot=True)
    return Outcome(False, f"verifier refused the settings ({code_text(code)})")


def verifier_query() -> list[str]:
    """What is verified NOW ("a summary of Driver Verifier's current activity")."""
    return ["verifier.exe", "/query"]


def verifier_querysettings() -> list[str]:
    """What WILL be verified after the next boot: never proof that Verifier is on."""
    return ["verifier.exe", "/querysettings"]


def names_driver(stdout: str, sys_name: str) -> bool:
    """True if ``sys_name`` appears as a whole token (an image name is never
    translated; the labels around it are)."""
    pat = re.compile(r"(?<![\w.-])" + re.escape(sys_name) + r"(?![\w.-])", re.I)
    return bool(pat.search(stdout))


# -- services -----------------------------------------------------------------

def sc_start(service: str) -> list[str]:
    return ["sc.exe", "start", service]


def sc_start_outcome(code: int) -> Outcome:
    if code == ERROR_SUCCESS:
        return Outcome(True, "started")
    if code == ERROR_SERVICE_ALREADY_RUNNING:
        return Outcome(True, "already running (1056)", nothing=True)
    if code == ERROR_SERVICE_DOES_NOT_EXIST:
        return Outcome(False, "the service does not exist (1060)")
    return Outcome(False, f"sc start failed with {code_text(code)}")


def sc_query(service: str) -> list[str]:
    return ["sc.exe", "query", service]


_SC_NUMBERED = re.compile(r"^\s*[^:\s][^:]*:\s*([0-9A-Fa-f]+)\s+[A-Z_]{3,}\b")


def parse_sc_state(stdout: str) -> int | None:
    """The numeric state of ``sc query NAME``.  The labels are translated
    (TYPE/STATE become TYP/STATUS in German); the field ORDER is not: the
    first "label : <number>  <WORD>" line is TYPE, the second is STATE."""
    numbered = [m.group(1) for m in map(_SC_NUMBERED.match, stdout.splitlines()) if m]
    if len(numbered) < 2:
        return None
    try:
        return int(numbered[1])
    except ValueError:
        return None


# -- registry -----------------------------------------------------------------

def reg_query(key: str, value: str | None = None) -> list[str]:
    return ["reg.exe", "query", key] + (["/v", value] if value else [])


def reg_add_dword(key: str, value: str, data: int) -> list[str]:
    return ["reg.exe", "add", key, "/v", value, "/t", "REG_DWORD", "/d", str(data), "/f"]


_REG_LINE = re.compile(r"^\s{2,}(\S(?:.*?\S)?)\s{4}(REG_[A-Z_]+)\s{4}(.*?)\s*$")


def parse_reg_values(stdout: str) -> dict[str, tuple[str, str | int]]:
    """``{name: (type, data)}`` from ``reg query`` output; REG_DWORD data
    as an int.  Value names, types and data are printed as stored."""
    out: dict[str, tuple[str, str | int]] = {}
    for line in stdout.splitlines():
        m = _REG_LINE.match(line.rstrip("\r"))
        if not m:
            continue
        name, typ, data = m.groups()
        if typ in ("REG_DWORD", "REG_QWORD"):
            try:
                out[name] = (typ, int(data, 0))
            except ValueError:
                continue
        else:
            out[name] = (typ, data)
    return out


def test_signing_active(start_options: str) -> bool:
    """The running boot's load options (``SystemStartOptions``) carry
    TESTSIGNING when the testsigning BCD option was on at boot; bcdedit's
    own output translates "Yes" (German: "Ja"), so it is not parsed."""
    return "TESTSIGNING" in re.split(r"[\s/]+", start_options.upper())


# -- certificates -------------------------------------------------------------

def certutil_addstore(store: str, cer: str) -> list[str]:
    """``-f`` overwrites an existing copy; exit 0 is the only success."""
    return ["certutil.exe", "-addstore", "-f", store, cer]


# -- pktmon -------------------------------------------------------------------

def pktmon_stop() -> list[str]:
    return ["pktmon.exe", "stop"]


def pktmon_start(etl: str, *, file_size_mb: int = PKTMON_FILE_SIZE_MB) -> list[str]:
    return ["pktmon.exe", "start", "--capture", "--pkt-size", "0", "--file-name", etl,
            "--file-size", str(file_size_mb), "--log-mode", "multi-file"]


def pktmon_etl2pcap(etl: str, out: str) -> list[str]:
    return ["pktmon.exe", "etl2pcap", etl, "--out", out]


# -- debugger -----------------------------------------------------------------

def cdb_analyze(cdb: str, dump: str, symbol_path: str) -> list[str]:
    """``-z`` opens the dump, ``-y`` sets the symbol path (the driver's PDB
    first), ``-c`` runs the commands; ``q`` ends cdb."""
    return [cdb, "-z", dump, "-y", symbol_path, "-c", "!analyze -v; q"]
