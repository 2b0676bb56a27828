"""The Windows guest-OS adapter, as strings: every value reaches PowerShell
only as a single-quoted literal made by harness/vm/powershell.py, whatever
hostile name or path it is.  (No Windows here: the strings are the product.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from hypothesis import example, given, settings
from hypothesis import strategies as st

from harness.vm.config import Guest, HostKeySource
from harness.vm import wincmd
from harness.vm.guest_os import StandInOs, WindowsOs, guest_os_for, summarize_analysis
from harness.vm.powershell import SINGLE_QUOTES, encode_command, quote_literal
from harness.vm.ssh import PowerShellDialect

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def guest(**kw) -> Guest:
    base = dict(name="ws2022", template="wfp-ws2022", snapshot="baseline", os_build="x", account="wfpadmin",
                host_key=HostKeySource(literal=KEY), ssh_key_env="K")
    base.update(kw)
    return Guest(**base)


def split_literals(script: str) -> tuple[str, list[str]]:
    """(skeleton with every single-quoted literal replaced by <L>, the literals' values),
    tokenised the way PowerShell reads single-quoted strings."""
    out, lits, i = [], [], 0
    while i < len(script):
        ch = script[i]
        if ch in SINGLE_QUOTES:
            j, buf = i + 1, []
            while True:
                c = script[j]
                if c in SINGLE_QUOTES:
                    if j + 1 < len(script) and script[j + 1] in SINGLE_QUOTES:
                        buf.append(c)
                        j += 2
                        continue
                    break
                buf.append(c)
                j += 1
            lits.append("".join(buf))
            out.append("<L>")
            i = j + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out), lits


def scripts(os_: WindowsOs, v: str) -> dict[str, str]:
    """Every command line the lifecycle sends, with ``v`` in every value slot."""
    argvs = {
        "venv": [os_.python, "-m", "venv", v],
        "pip": [os_.venv_python(v), "-m", "pip", "install", "--no-index", "--find-links", v, "-r", v],
        "certutil": wincmd.certutil_addstore("Root", v),
        "pnputil": wincmd.pnputil_add_install(v),
        "sc_start": wincmd.sc_start(v),
        "sc_query": wincmd.sc_query(v),
        "verifier": wincmd.verifier_standard(v),
        "reg_query": wincmd.reg_query(v, v),
        "reg_add": wincmd.reg_add_dword(v, v, 2),
        "pktmon_start": wincmd.pktmon_start(v),
        "etl2pcap": wincmd.pktmon_etl2pcap(v, v),
        "cdb": wincmd.cdb_analyze(os_.cdb, v, v),
    }
    out = {k: os_.render(a) for k, a in argvs.items()}
    out["run_suite"] = os_.run_suite(v, v, v, {"WFP_DRIVER_VERSION": v}, r"C:\wfp\winsock-agent.exe")
    out["prepare_rundir"] = os_.prepare_rundir(v, "in")
    out["agent_exec"] = os_.agent_exec(v)
    return out


hostile = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(hostile)
@example("'; Remove-Item -Recurse C:\\ #")
@example("$(Stop-Computer)")
@example("C:\\Program Files\\a`b\u2019c\u201bd\\MEMORY.DMP")
@example("\u2018\u2019'\u201a\u201b")
@example("a\nb\r\nexit 0")
def test_hostile_values_stay_literals(value):
    os_ = WindowsOs(guest(workdir=value, python=value))
    benign = scripts(WindowsOs(guest(workdir="BENIGN", python="BENIGN")), "BENIGN")
    for name, script in scripts(os_, value).items():
        skel, lits = split_literals(script)
        skel_b, lits_b = split_literals(benign[name])
        assert skel == skel_b, name               # the code around the values never changes
        assert value in lits, name                # the value arrives verbatim, as one literal
        assert len(lits) == len(lits_b)
        # and the whole script survives the trip through -EncodedCommand
        line = PowerShellDialect().wrap(script, "n0nce")
        assert "-EncodedCommand" in line and "\n" not in line


def test_expected_windows_commands():
    w = WindowsOs(guest())
    assert w.render(wincmd.pnputil_add_install(r"C:\wfp\runs\r1\in\driver\x.inf")) == \
        r"& 'pnputil.exe' '/add-driver' 'C:\wfp\runs\r1\in\driver\x.inf' '/install'"
    assert w.render(wincmd.verifier_standard("x.sys")) == "& 'verifier.exe' '/standard' '/driver' 'x.sys'"
    assert w.render(wincmd.verifier_query()) == "& 'verifier.exe' '/query'"
    assert "'--log-mode' 'multi-file'" in w.render(wincmd.pktmon_start(r"C:\r\c.etl"))
    assert "pktmon.exe' 'etl2pcap' 'C:\\r\\c.etl' '--out' 'C:\\r\\c.pcapng'" in \
        w.render(wincmd.pktmon_etl2pcap(r"C:\r\c.etl", r"C:\r\c.pcapng"))
    suite = w.run_suite(w.python, r"C:\r", r"C:\r\j.xml", {}, r"C:\r\in\winsock-agent.exe")
    # pytest gets the shlex-quoted path (the agent launcher splits POSIX-style), quoted again for PowerShell.
    assert r"'--target' 'agent' '--agent-command' '''C:\r\in\winsock-agent.exe'''" in suite
    with pytest.raises(ValueError, match="winsock-agent"):
        w.run_suite(w.python, r"C:\r", r"C:\r\j.xml", {})
    assert "'-c' '!analyze -v; q'" in w.render(wincmd.cdb_analyze(w.cdb, r"C:\Windows\MEMORY.DMP", r"C:\s"))
    assert w.sftp(r"C:\wfp\runs\x.whl") == "/C:/wfp/runs/x.whl"
    assert w.venv_python(r"C:\v") == r"C:\v\Scripts\python.exe"
    assert isinstance(guest_os_for(guest()), WindowsOs)
    # the controller-side suite starts the uploaded agent as the template's PowerShell runs a program
    assert w.agent_exec(r"C:\r\in\winsock-agent.exe") == r"& 'C:\r\in\winsock-agent.exe'"
    args = w.suite_args("/a/junit.xml", "python -m harness.vm.agent_ssh /a/e.json", "test_sockets")
    assert args[args.index("--agent-command") + 1] == "python -m harness.vm.agent_ssh /a/e.json"
    assert args[args.index("-k") + 1] == "test_sockets" and "--profile" not in args
    # the stand-in sends the same argv, quoted for sh; its .exe runs under wine-exe, its Winsock is Wine's
    si = guest_os_for(guest(os="posix", workdir="/tmp/x"))
    assert isinstance(si, StandInOs) and si.render(wincmd.verifier_query()) == "verifier.exe /query"
    assert si.agent_exec("/r/in/winsock-agent.exe") == "wine-exe /r/in/winsock-agent.exe"
    suite = si.run_suite("py", "/r", "/r/j.xml", {}, "/r/in/winsock-agent.exe", "test_select")
    assert "--agent-command 'wine-exe /r/in/winsock-agent.exe'" in suite
    assert "--profile wine-8.0 -p harness.vm.wine_guest -k test_select" in suite


SC_EN = """
SERVICE_NAME: WfpRedirectCallout
        TYPE               : 1  KERNEL_DRIVER
        STATE              : 4  RUNNING
                                (STOPPABLE, NOT_PAUSABLE, IGNORES_SHUTDOWN)
        WIN32_EXIT_CODE    : 0  (0x0)
        SERVICE_EXIT_CODE  : 0  (0x0)
        CHECKPOINT         : 0x0
        WAIT_HINT          : 0x0
"""


def test_windows_output_readers_are_locale_independent():
    # sc query: labels translated, order fixed (sc-query page); the state is numeric.
    assert wincmd.parse_sc_state(SC_EN) == wincmd.SERVICE_RUNNING
    de = SC_EN.replace("TYPE ", "TYP  ").replace("STATE", "STATUS").replace(": 4  RUNNING", ": 1  STOPPED")
    assert wincmd.parse_sc_state(de) == wincmd.SERVICE_STOPPED
    assert wincmd.parse_sc_state("[SC] OpenService FEHLER 1060:\n\nDer angegebene Dienst ...") is None
    # reg query prints names, types and data as stored
    reg = "\nHKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\n    SystemStartOptions    REG_SZ     NOEXECUTE=OPTIN  TESTSIGNING\n"
    v = wincmd.parse_reg_values(reg)
    assert wincmd.test_signing_active(v["SystemStartOptions"][1]) is True
    assert wincmd.test_signing_active(" NOEXECUTE=OPTIN") is False
    assert wincmd.parse_reg_values("    CrashDumpEnabled    REG_DWORD    0x2\r\n")["CrashDumpEnabled"] == ("REG_DWORD", 2)
    # verifier: the image name is never translated
    assert wincmd.names_driver("Überprüfte Treiber:\n\nName: wfp_redirect_callout.sys, loads: 1", "wfp_redirect_callout.sys")
    assert not wincmd.names_driver("Name: xwfp_redirect_callout.sys.bak", "wfp_redirect_callout.sys")
    assert not wincmd.names_driver("Zurzeit werden keine Treiber überprüft.", "wfp_redirect_callout.sys")


def test_documented_exit_codes():
    # pnputil-return-values
    assert wincmd.pnputil_outcome(0).ok and not wincmd.pnputil_outcome(0).reboot
    assert wincmd.pnputil_outcome(3010).ok and wincmd.pnputil_outcome(3010).reboot
    assert wincmd.pnputil_outcome(259).ok and wincmd.pnputil_outcome(259).nothing
    assert not wincmd.pnputil_outcome(-2146762487).ok and "0x800B0109" in wincmd.pnputil_outcome(-2146762487).meaning
    # verifier-command-line "Return Codes": 2 is success, pending a reboot
    assert wincmd.verifier_enable_outcome(2).ok and wincmd.verifier_enable_outcome(2).reboot
    assert not wincmd.verifier_enable_outcome(1).ok
    assert wincmd.sc_start_outcome(1056).ok and not wincmd.sc_start_outcome(1060).ok
    text = Path(__file__).with_name("test_guest_os_windows.py").read_text()
    assert "BUGCHECK_CODE: d1" in summarize_analysis("x\nBUGCHECK_CODE:  d1\nMODULE_NAME: m\n" + text[:0])


def test_encoded_scripts_fit_cmd_exe():
    w = WindowsOs(guest())
    for script in scripts(w, "C:\\wfp\\runs\\20261126T101140Z-322dc1-a1\\in\\wfp_redirect_harness-0.1.0-py3-none-any.whl").values():
        encode_command(script)   # raises if too long for cmd.exe
