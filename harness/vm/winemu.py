#!/usr/bin/env python3
"""The stand-in guest's Windows commands: pnputil, verifier, sc, reg,
certutil, pktmon, cdb and shutdown, answered with Windows' documented exit
codes and output shapes, in English (en-US) or German (de-DE).

Installed on a stand-in (``harness.vm.standin``) as one shim per command
name in the sshd's PATH, so the lab sends the SAME argv it sends to Windows
(built by ``harness.vm.wincmd``) and reads the answers with the same
parsers.  Standalone on purpose: it runs with the guest's Python and imports
nothing of the project.  State lives in JSON files under the state
directory; ``knobs.json`` (written by tests) makes the stand-in misbehave the
way a real guest can.

POSIX exit statuses are 8 bits and Windows' are 32: the full code is also
written to ``$WFPH_WIDE_EXIT`` (read by ``harness.vm.ssh.PosixDialect``), so
3010 arrives as 3010, not 194.

Each transcript cites its page; text marked "assumed" is not on the page
(only its exit code or field order is relied upon by the lab).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import sys
import uuid
from pathlib import Path

STATE = Path(os.environ.get("WFP_STANDIN_STATE", "."))
BOOT_ID = os.environ.get("WFP_STANDIN_BOOT_ID", "")

PAGES = {
    "pnputil": "https://learn.microsoft.com/windows-hardware/drivers/devtest/pnputil-return-values",
    "verifier": "https://learn.microsoft.com/windows-hardware/drivers/devtest/verifier-command-line",
    "sc": "https://learn.microsoft.com/windows-server/administration/windows-commands/sc-query",
    "reg": "https://learn.microsoft.com/windows-server/administration/windows-commands/reg-query",
    "certutil": "https://learn.microsoft.com/windows-server/administration/windows-commands/certutil#-addstore",
    "pktmon": "https://learn.microsoft.com/windows-server/administration/windows-commands/pktmon-start",
    "cdb": "https://learn.microsoft.com/windows-hardware/drivers/debuggercmds/-analyze",
    "shutdown": "https://learn.microsoft.com/windows-server/administration/windows-commands/shutdown",
}

# Output text per locale.  English follows the pages above; the German
# labels are the stand-in's own rendering (assumed): the lab must not read them.
T = {
    "en-US": {
        "pnp_banner": "Microsoft PnP Utility\n",
        "pnp_adding": "Adding driver package:  {inf}",
        "pnp_added": "Driver package added successfully.\nPublished Name:         {oem}",
        "pnp_installed": "Driver package installed on matching devices.",
        "pnp_nodev": "Driver package is up-to-date on device or no matching devices found.",
        "pnp_reboot": "System reboot is needed to complete install operations!",
        "pnp_untrusted": "Failed to add driver package: A certificate chain processed, but terminated in a root "
                         "certificate which is not trusted by the trust provider.",
        "pnp_missing": "Failed to add driver package: The system cannot find the file specified.",
        "ver_new": "New verifier settings:\n",
        "ver_restart": "You must restart this computer for the changes to take effect.",
        "ver_refused": "Error: Driver Verifier cannot be enabled: the operation is blocked by system policy.",
        "ver_drivers": "Verified drivers:",
        "ver_none_q": "No drivers are currently verified.",
        "ver_none_s": "None",
        "ver_flag_on": "Enabled",
        "sc_name": "SERVICE_NAME", "sc_type": "TYPE", "sc_state": "STATE", "sc_w32": "WIN32_EXIT_CODE",
        "sc_svc": "SERVICE_EXIT_CODE", "sc_cp": "CHECKPOINT", "sc_wh": "WAIT_HINT",
        "sc_1060": "[SC] OpenService FAILED 1060:\n\nThe specified service does not exist as an installed service.",
        "sc_1056": "[SC] StartService FAILED 1056:\n\nAn instance of the service is already running.",
        "sc_fail": "[SC] StartService FAILED {code}:\n\n{text}",
        "reg_ok": "The operation completed successfully.",
        "reg_missing": "ERROR: The system was unable to find the specified registry key or value.",
        "cert_added": 'Certificate "{cn}" added to store.\nCertUtil: -addstore command completed successfully.',
        "cert_bad": "CertUtil: -addstore command FAILED: 0x80092009 (-2146885623 CRYPT_E_NO_MATCH)\n"
                    "CertUtil: Cannot find object or property.",
        "pkt_started": "Logger Parameters:\n    Logger name:        PktMon\n    Logging mode:       {mode}\n"
                       "    Log file:           {file}\n    Max file size:      {size} MB\n    Memory used:        "
                       "16 MB\n\nActive measurement started.",
        "pkt_stopped": "Flushing logs...\nMerging metadata...\nLog file: {file}",
        "pkt_idle": "There is no active data collection.",
        "pkt_conv": "Processing...\n\nPackets total:       {n}\nPacket drop count:   0\nPackets formatted:   {n}\n"
                    "Formatted file:      {out}",
        "sd_ok": "",
    },
    "de-DE": {
        "pnp_banner": "Microsoft-PnP-Hilfsprogramm\n",
        "pnp_adding": "Treiberpaket wird hinzugefügt:  {inf}",
        "pnp_added": "Das Treiberpaket wurde erfolgreich hinzugefügt.\nVeröffentlichter Name:  {oem}",
        "pnp_installed": "Das Treiberpaket wurde auf passenden Geräten installiert.",
        "pnp_nodev": "Das Treiberpaket ist auf dem Gerät aktuell, oder es wurden keine passenden Geräte gefunden.",
        "pnp_reboot": "Zum Abschließen der Installation ist ein Neustart erforderlich!",
        "pnp_untrusted": "Fehler beim Hinzufügen des Treiberpakets: Eine Zertifikatkette wurde zwar verarbeitet, "
                         "endete jedoch mit einem Stammzertifikat, das beim Vertrauensanbieter nicht als "
                         "vertrauenswürdig gilt.",
        "pnp_missing": "Fehler beim Hinzufügen des Treiberpakets: Die angegebene Datei wurde nicht gefunden.",
        "ver_new": "Neue Überprüfungseinstellungen:\n",
        "ver_restart": "Sie müssen den Computer neu starten, damit die Änderungen wirksam werden.",
        "ver_refused": "Fehler: Die Treiberüberprüfung kann nicht aktiviert werden: Der Vorgang wird durch eine "
                       "Systemrichtlinie blockiert.",
        "ver_drivers": "Überprüfte Treiber:",
        "ver_none_q": "Zurzeit werden keine Treiber überprüft.",
        "ver_none_s": "Keine",
        "ver_flag_on": "Aktiviert",
        "sc_name": "SERVICE_NAME", "sc_type": "TYP", "sc_state": "STATUS", "sc_w32": "WIN32_EXITCODE",
        "sc_svc": "DIENST_EXITCODE", "sc_cp": "CHECKPOINT", "sc_wh": "WARTE_HINWEIS",
        "sc_1060": "[SC] OpenService FEHLER 1060:\n\nDer angegebene Dienst ist kein installierter Dienst.",
        "sc_1056": "[SC] StartService FEHLER 1056:\n\nEine Instanz des Dienstes wird bereits ausgeführt.",
        "sc_fail": "[SC] StartService FEHLER {code}:\n\n{text}",
        "reg_ok": "Der Vorgang wurde erfolgreich beendet.",
        "reg_missing": "FEHLER: Der angegebene Registrierungsschlüssel bzw. Wert wurde nicht gefunden.",
        "cert_added": 'Das Zertifikat "{cn}" wurde dem Speicher hinzugefügt.\n'
                      "CertUtil: -addstore-Befehl wurde erfolgreich ausgeführt.",
        "cert_bad": "CertUtil: -addstore-Befehl ist FEHLGESCHLAGEN: 0x80092009 (-2146885623 CRYPT_E_NO_MATCH)\n"
                    "CertUtil: Objekt oder Eigenschaft wurde nicht gefunden.",
        "pkt_started": "Protokollierungsparameter:\n    Protokollname:      PktMon\n    Protokollmodus:     {mode}\n"
                       "    Protokolldatei:     {file}\n    Max. Dateigröße:    {size} MB\n\n"
                       "Aktive Messung gestartet.",
        "pkt_stopped": "Protokolle werden geleert...\nProtokolldatei: {file}",
        "pkt_idle": "Es ist keine aktive Datensammlung vorhanden.",
        "pkt_conv": "Verarbeitung...\n\nPakete gesamt:       {n}\nFormatierte Datei:   {out}",
        "sd_ok": "",
    },
}

SERVICE_STATE_WORDS = {1: "STOPPED", 2: "START_PENDING", 3: "STOP_PENDING", 4: "RUNNING"}
VERIFIER_STANDARD_FLAGS = 0x209BB
CERT_E_UNTRUSTEDROOT = -2146762487      # 0x800B0109 (assumed as pnputil's exit code)
CRYPT_E_NO_MATCH = -2146885623          # 0x80092009


# -- state --------------------------------------------------------------------

def load(name: str, default):
    p = STATE / name
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def save(name: str, data) -> None:
    p = STATE / name
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, p)


def knob(name: str, default=None):
    return load("knobs.json", {}).get(name, default)


def text(key: str, **kw) -> str:
    loc = load("locale.json", {"locale": "en-US"}).get("locale", "en-US")
    return T.get(loc, T["en-US"])[key].format(**kw)


def log(tool: str, argv: list[str], code: int) -> None:
    with open(STATE / "commands.log", "a", encoding="utf-8") as f:
        f.write(json.dumps({"tool": tool, "argv": argv, "exit": code}) + "\n")


def finish(tool: str, argv: list[str], code: int, out: str = "", err: str = "") -> int:
    if out:
        sys.stdout.write(out if out.endswith("\n") else out + "\n")
    if err:
        sys.stderr.write(err if err.endswith("\n") else err + "\n")
    log(tool, argv, code)
    wide = os.environ.get("WFPH_WIDE_EXIT")
    if wide:
        Path(wide).write_text(str(code))
    return code & 0xFF


def fold(a: str) -> str:
    return a.lower().lstrip("-/")


# -- registry -----------------------------------------------------------------

def reg() -> dict:
    return load("registry.json", {})


def reg_set(key: str, name: str, typ: str, data) -> None:
    r = reg()
    r.setdefault(key.upper(), {})[name] = [typ, data]
    save("registry.json", r)


def reg_get(key: str, name: str):
    return reg().get(key.upper(), {}).get(name)


def cmd_reg(argv: list[str]) -> int:
    # https://learn.microsoft.com/windows-server/administration/windows-commands/reg-query
    if len(argv) < 2 or fold(argv[0]) not in ("query", "add"):
        return finish("reg", argv, 1, err="ERROR: Invalid syntax.")
    op, key, rest = fold(argv[0]), argv[1], argv[2:]
    opts: dict[str, str] = {}
    i = 0
    while i < len(rest):
        k = fold(rest[i])
        if k == "f":
            opts["f"] = "1"
            i += 1
        else:
            opts[k] = rest[i + 1] if i + 1 < len(rest) else ""
            i += 2
    if op == "add":
        if "v" not in opts or "f" not in opts:
            return finish("reg", argv, 1, err="ERROR: Invalid syntax.")
        typ = opts.get("t", "REG_SZ").upper()
        data = opts.get("d", "")
        reg_set(key, opts["v"], typ, int(data, 0) if typ == "REG_DWORD" else data)
        return finish("reg", argv, 0, out=text("reg_ok"))
    values = reg().get(key.upper())
    if values is None or ("v" in opts and opts["v"] not in values):
        return finish("reg", argv, 1, err=text("reg_missing"))
    names = [opts["v"]] if "v" in opts else sorted(values)
    lines = ["", key.replace("HKLM", "HKEY_LOCAL_MACHINE", 1)]
    for n in names:
        typ, data = values[n]
        shown = f"0x{data:x}" if typ == "REG_DWORD" else str(data)
        lines.append(f"    {n}    {typ}    {shown}")
    return finish("reg", argv, 0, out="\n".join(lines) + "\n")


# -- certificates, driver store, services -------------------------------------

def cert_digest(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not (data.startswith(b"0\x82") or data.startswith(b"-----BEGIN CERTIFICATE-----")):
        return None
    return hashlib.sha256(data).hexdigest()


def cmd_certutil(argv: list[str]) -> int:
    # https://learn.microsoft.com/windows-server/administration/windows-commands/certutil#-addstore
    args = [a for a in argv if fold(a) != "f"]
    if len(args) != 3 or fold(args[0]) != "addstore":
        return finish("certutil", argv, 87, err="CertUtil: Unknown arg")
    store, cer = args[1], Path(args[2])
    digest = cert_digest(cer)
    if digest is None:
        return finish("certutil", argv, CRYPT_E_NO_MATCH, out=text("cert_bad"))
    stores = load("certstores.json", {})
    if digest not in stores.setdefault(store, []):
        stores[store].append(digest)
    save("certstores.json", stores)
    return finish("certutil", argv, 0, out=f'{store}\n' + text("cert_added", cn=cer.stem))


def inf_service(inf: Path) -> tuple[str, int, str]:
    """(service name, StartType, binary) from a primitive driver INF."""
    t = inf.read_text(encoding="utf-8", errors="replace")
    strings = dict(re.findall(r'^\s*(\w+)\s*=\s*"([^"]*)"', t, re.M))
    m = re.search(r"^\s*AddService\s*=\s*([^,\s]+)", t, re.M | re.I)
    name = m.group(1) if m else inf.stem
    name = strings.get(name.strip("%"), name) if name.startswith("%") else name
    st = re.search(r"^\s*StartType\s*=\s*(\d+)", t, re.M | re.I)
    sys_files = sorted(inf.parent.glob("*.sys"))
    return name, int(st.group(1)) if st else 3, sys_files[0].name if sys_files else f"{name}.sys"


def cmd_pnputil(argv: list[str]) -> int:
    # https://learn.microsoft.com/windows-hardware/drivers/devtest/pnputil-return-values
    low = [fold(a) for a in argv]
    if "add-driver" not in low:
        return finish("pnputil", argv, 87, err="Invalid command.")
    inf = Path(argv[low.index("add-driver") + 1])
    out = [text("pnp_banner"), text("pnp_adding", inf=inf.name)]
    if not inf.is_file():
        return finish("pnputil", argv, 2, out="\n".join(out + [text("pnp_missing")]))
    cers = sorted(inf.parent.glob("*.cer"))
    signer = cert_digest(cers[0]) if cers else None
    stores = load("certstores.json", {})
    trusted = signer is not None and all(signer in stores.get(s, []) for s in ("Root", "TrustedPublisher"))
    if not trusted:
        return finish("pnputil", argv, CERT_E_UNTRUSTEDROOT, out="\n".join(out + [text("pnp_untrusted")]))
    store = load("driverstore.json", {})
    oem = store.get(inf.name) or f"oem{len(store) + 3}.inf"
    store[inf.name] = oem
    save("driverstore.json", store)
    out.append(text("pnp_added", oem=oem))
    code = 0
    if "install" in low:
        name, start, binary = inf_service(inf)
        services = load("services.json", {})
        forced = knob("pnputil_exit")
        pending = forced == 3010
        services[name] = {"start": start, "state": 1, "binary": binary, "pending_reboot": pending}
        save("services.json", services)
        reg_set(r"HKLM\SYSTEM\CurrentControlSet\Services" + "\\" + name, "Start", "REG_DWORD", start)
        if forced == 259:
            out.append(text("pnp_nodev"))
            code = 259
        elif pending:
            out += [text("pnp_installed"), text("pnp_reboot")]
            code = 3010
        else:
            out.append(text("pnp_installed"))
    return finish("pnputil", argv, code, out="\n".join(out))


def cmd_sc(argv: list[str]) -> int:
    # https://learn.microsoft.com/windows-server/administration/windows-commands/sc-query
    # https://learn.microsoft.com/windows-server/administration/windows-commands/sc-start
    if len(argv) != 2 or fold(argv[0]) not in ("query", "start"):
        return finish("sc", argv, 87, err="[SC] invalid arguments")
    op, name = fold(argv[0]), argv[1]
    services = load("services.json", {})
    svc = services.get(name)
    if svc is None or svc.get("pending_reboot"):
        return finish("sc", argv, 1060, out=text("sc_1060"))
    if op == "start":
        if svc["state"] == 4:
            return finish("sc", argv, 1056, out=text("sc_1056"))
        err = knob("driver_start_error")
        if err:
            return finish("sc", argv, int(err), out=text("sc_fail", code=err, text="(stand-in: driver refused to start)"))
        svc["state"] = 4
        save("services.json", services)
        loads = load("driver_loads.json", {})
        loads[svc["binary"].lower()] = loads.get(svc["binary"].lower(), 0) + 1
        save("driver_loads.json", loads)
        # START_PENDING is what sc start prints for a driver that starts at once (assumed).
        state = 4
    else:
        state = svc["state"]
    pad = lambda label: f"        {label:<19}: "  # noqa: E731
    lines = [f"{text('sc_name')}: {name}",
             pad(text("sc_type")) + "1  KERNEL_DRIVER",
             pad(text("sc_state")) + f"{state}  {SERVICE_STATE_WORDS[state]}",
             " " * 32 + "(STOPPABLE, NOT_PAUSABLE, IGNORES_SHUTDOWN)",
             pad(text("sc_w32")) + "0  (0x0)", pad(text("sc_svc")) + "0  (0x0)",
             pad(text("sc_cp")) + "0x0", pad(text("sc_wh")) + "0x0"]
    return finish("sc", argv, 0, out="\n".join(lines))


# -- Driver Verifier ----------------------------------------------------------

def cmd_verifier(argv: list[str]) -> int:
    # https://learn.microsoft.com/windows-hardware/drivers/devtest/verifier-command-line
    # Return codes: 0 EXIT_CODE_SUCCESS, 1 EXIT_CODE_ERROR, 2 EXIT_CODE_REBOOT_NEEDED.
    low = [fold(a) for a in argv]
    v = load("verifier.json", {"next": None, "active": None})
    if low[:1] == ["standard"] and "driver" in low:
        drivers = argv[low.index("driver") + 1:]
        if not drivers:
            return finish("verifier", argv, 1, err="Error: no driver names")
        if knob("verifier_refuse"):
            return finish("verifier", argv, 1, out=text("ver_refused"))
        v["next"] = {"flags": VERIFIER_STANDARD_FLAGS, "drivers": drivers}
        save("verifier.json", v)
        out = [text("ver_new"), f"Special pool: {text('ver_flag_on')}", f"Force IRQL checking: {text('ver_flag_on')}",
               "", text("ver_drivers"), "", *drivers, "", text("ver_restart")]
        return finish("verifier", argv, 2, out="\n".join(out))
    if low == ["querysettings"]:
        s = v.get("next")
        if not s:
            return finish("verifier", argv, 0, out=f"\n{text('ver_drivers')}\n\n{text('ver_none_s')}")
        out = [f"Special pool: {text('ver_flag_on')}", "", text("ver_drivers"), "", *s["drivers"]]
        return finish("verifier", argv, 0, out="\n".join(out))
    if low == ["query"]:
        a = v.get("active")
        if not a:
            return finish("verifier", argv, 0, out=text("ver_none_q"))
        loads = load("driver_loads.json", {})
        out = [f"Level: {a['flags']:08X}", "RaiseIrqls: 0", "AcquireSpinLocks: 0", "", text("ver_drivers"), ""]
        for d in a["drivers"]:
            out += [f"Name: {d}, loads: {loads.get(d.lower(), 0)}, unloads: 0",
                    "CurrentPagedPoolAllocations: 0", "CurrentNonPagedPoolAllocations: 0"]
        return finish("verifier", argv, 0, out="\n".join(out))
    if low == ["reset"]:
        v["next"] = None
        save("verifier.json", v)
        return finish("verifier", argv, 2, out=text("ver_restart"))
    return finish("verifier", argv, 1, err="Error: unsupported verifier command in the stand-in")


# -- reboot -------------------------------------------------------------------

def cmd_shutdown(argv: list[str]) -> int:
    # https://learn.microsoft.com/windows-server/administration/windows-commands/shutdown
    if "/r" not in [a.lower() for a in argv]:
        return finish("shutdown", argv, 87, err="only /r is emulated")
    v = load("verifier.json", {"next": None, "active": None})
    # Next-boot settings become the active ones, unless the template blocks Verifier.
    v["active"] = None if knob("verifier_ignore") else v.get("next")
    save("verifier.json", v)
    services = load("services.json", {})
    for s in services.values():
        s["pending_reboot"] = False
        # Boot (0), system (1) and automatic (2) start; demand start (3) stays stopped.
        s["state"] = 4 if s["start"] <= 2 else 1
    save("services.json", services)
    save("driver_loads.json", {})
    p = load("pktmon.json", {})
    p["running"] = False
    save("pktmon.json", p)
    if BOOT_ID:
        tmp = BOOT_ID + ".new"
        Path(tmp).write_text(str(uuid.uuid4()) + "\n")
        os.replace(tmp, BOOT_ID)
    return finish("shutdown", argv, 0)


# -- pktmon -------------------------------------------------------------------

def pcapng(path: Path) -> None:
    def blk(t: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        return struct.pack("<II", t, n) + body + struct.pack("<I", n)
    shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    idb = struct.pack("<HHI", 1, 0, 0)
    path.write_bytes(blk(0x0A0D0D0A, shb) + blk(1, idb))


def cmd_pktmon(argv: list[str]) -> int:
    # https://learn.microsoft.com/windows-server/administration/windows-commands/pktmon-start
    low = [fold(a) for a in argv]
    p = load("pktmon.json", {})
    if low[:1] == ["start"]:
        def opt(name: str, short: str, default: str) -> str:
            for k in (name, short):
                if k in low:
                    return argv[low.index(k) + 1]
            return default
        p = {"running": True, "file": opt("file-name", "f", "PktMon.etl"), "size": int(opt("file-size", "s", "512")),
             "mode": opt("log-mode", "m", "circular")}
        save("pktmon.json", p)
        return finish("pktmon", argv, 0, out=text("pkt_started", mode=p["mode"], file=p["file"], size=p["size"]))
    if low == ["stop"]:
        if not p.get("running"):
            return finish("pktmon", argv, 0, out=text("pkt_idle"))
        p["running"] = False
        save("pktmon.json", p)
        # The run's traffic, in MB (knob): a circular log keeps only the last
        # file's worth; multi-file starts a new numbered file each time one fills.
        volume = int(knob("pktmon_volume_mb", 1))
        f = Path(p["file"])
        if p["mode"] == "multi-file":
            n = max(1, -(-volume // p["size"]))
            files = [f.with_name(f"{f.stem}{i}{f.suffix}") for i in range(1, n + 1)]
        else:
            files = [f]
        for i, x in enumerate(files):
            lost = p["mode"] == "circular" and volume > p["size"]
            x.write_text(json.dumps({"etl": i + 1, "first_packets_overwritten": lost}))
        return finish("pktmon", argv, 0, out=text("pkt_stopped", file=", ".join(map(str, files))))
    if low[:1] == ["etl2pcap"] and "out" in low:
        etl, out = Path(argv[1]), Path(argv[low.index("out") + 1])
        if not etl.is_file():
            return finish("pktmon", argv, 2, err=f"{etl}: not found")
        pcapng(out)
        return finish("pktmon", argv, 0, out=text("pkt_conv", n=0, out=out))
    return finish("pktmon", argv, 87, err="unsupported pktmon command in the stand-in")


# -- cdb ----------------------------------------------------------------------

def cmd_cdb(argv: list[str]) -> int:
    # https://learn.microsoft.com/windows-hardware/drivers/debugger/cdb-command-line-options
    # https://learn.microsoft.com/windows-hardware/drivers/debuggercmds/-analyze
    low = argv
    if "-z" not in low or "-c" not in low:
        return finish("cdb", argv, 1, err="usage: cdb -z dump -y symbols -c commands")
    dump = Path(argv[low.index("-z") + 1])
    sym = argv[low.index("-y") + 1] if "-y" in low else ""
    module = knob("bugcheck_module", "wfp_redirect_callout")
    has_pdb = any((Path(d) / f"{module}.pdb").is_file() for d in re.split(r"[;]", sym)
                  if d and "*" not in d)
    out = ["", "Microsoft (R) Windows Debugger Version 10.0.26100.1 AMD64", "",
           f"Loading Dump File [{dump}]", f"Symbol search path is: {sym or '*** Invalid ***'}"]
    if not dump.is_file():
        return finish("cdb", argv, 1, out="\n".join(out + [f"Could not open dump file [{dump}]"]))
    if not has_pdb:
        out.append(f"*** ERROR: Module load completed but symbols could not be loaded for {module}.sys")
    sym_name = f"{module}!ClassifyConnect+42" if has_pdb else f"{module}+1a2b"
    out += ["", "BUGCHECK_CODE:  d1", "BUGCHECK_P1: 0", f"MODULE_NAME: {module}", f"IMAGE_NAME:  {module}.sys",
            f"SYMBOL_NAME:  {sym_name}", f"FAILURE_BUCKET_ID:  AV_{module}!{sym_name.split('!')[-1].split('+')[0]}",
            "quit:"]
    return finish("cdb", argv, 0, out="\n".join(out))


TOOLS = {"pnputil": cmd_pnputil, "verifier": cmd_verifier, "sc": cmd_sc, "reg": cmd_reg,
         "certutil": cmd_certutil, "pktmon": cmd_pktmon, "cdb": cmd_cdb, "shutdown": cmd_shutdown}


def main(argv: list[str]) -> int:
    tool = argv[0].lower().removesuffix(".exe")
    # Test knobs: a command that hangs, or that prints extra text first
    # (a vendor co-installer's chatter, say).
    hang = knob(f"hang_{tool}")
    if hang:
        import time
        time.sleep(float(hang))
    extra = knob(f"print_{tool}")
    if extra:
        print(extra)
    return TOOLS[tool](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
