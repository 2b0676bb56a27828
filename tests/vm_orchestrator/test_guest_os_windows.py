"""The Windows guest-OS adapter, as strings: every value reaches PowerShell
only as a single-quoted literal made by harness/vm/powershell.py, whatever
hostile name or path it is.  (No Windows here: the strings are the product.)"""

from __future__ import annotations

from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from harness.vm.config import Guest, HostKeySource
from harness.vm.guest_os import PosixStandInOs, WindowsOs, guest_os_for, summarize_analysis
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
    return {
        "install_harness": os_.install_harness(v, v)[0],
        "install_driver": os_.install_driver(v, v, v),
        "driver_loaded": os_.driver_loaded(v),
        "enable_verifier": os_.enable_verifier(v),
        "capture_start": os_.capture_start(v),
        "capture_stop": os_.capture_stop(v, v),
        "run_suite": os_.run_suite(v, v, v, {"WFP_DRIVER_VERSION": v}),
        "analyze_dump": os_.analyze_dump(v),
        "prepare_rundir": os_.prepare_rundir(v, "in"),
    }


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
    assert w.install_driver(r"C:\wfp\runs\r1\in\driver", "x.inf", "WfpRedirectCallout").splitlines()[0] == \
        r"& 'pnputil.exe' '/add-driver' 'C:\wfp\runs\r1\in\driver\x.inf' '/install'"
    assert w.enable_verifier("x.sys") == "& 'verifier.exe' '/standard' '/driver' 'x.sys'"
    assert w.test_signing() == "& 'bcdedit.exe' '/enum' '{current}'"
    assert "pktmon.exe' 'etl2pcap' 'C:\\r\\c.etl' '--out' 'C:\\r\\c.pcapng'" in w.capture_stop(r"C:\r\c.etl", r"C:\r\c.pcapng")
    assert "'--target' 'native'" in w.run_suite(w.python, r"C:\r", r"C:\r\j.xml", {})
    assert "'-c' '!analyze -v; q'" in w.analyze_dump(r"C:\Windows\MEMORY.DMP")
    assert w.sftp(r"C:\wfp\runs\x.whl") == "/C:/wfp/runs/x.whl"
    assert quote_literal("CrashDumpEnabled") in w.enable_crash_dumps()
    assert isinstance(guest_os_for(guest()), WindowsOs)
    assert isinstance(guest_os_for(guest(os="posix", workdir="/tmp/x")), PosixStandInOs)


def test_windows_output_parsers():
    w = WindowsOs
    assert w.parse_test_signing("identifier {current}\ntestsigning             Yes\n") is True
    assert w.parse_test_signing("identifier {current}\nnx OptIn\n") is False
    assert w.parse_verifier("Special pool: Enabled\nVerified drivers:\nwfp_redirect_callout.sys\n",
                            "wfp_redirect_callout.sys") is True
    assert w.parse_verifier("Verified drivers:\nNone\n", "wfp_redirect_callout.sys") is False
    assert w.parse_driver_loaded("SERVICE_NAME: x\n        STATE              : 4  RUNNING\n") is True
    assert w.parse_driver_loaded("        STATE              : 1  STOPPED\n") is False
    dumps = w.parse_dumps("C:\\Windows\\MEMORY.DMP\t1048576\t2026-01-01T00:00:00.0000000Z\r\njunk\n")
    assert [(d.path, d.size) for d in dumps] == [("C:\\Windows\\MEMORY.DMP", 1048576)]
    text = Path(__file__).with_name("test_guest_os_windows.py").read_text()
    assert "BUGCHECK_CODE: d1" in summarize_analysis("x\nBUGCHECK_CODE:  d1\nMODULE_NAME: m\n" + text[:0])


def test_encoded_scripts_fit_cmd_exe():
    w = WindowsOs(guest())
    for script in scripts(w, "C:\\wfp\\runs\\20261126T101140Z-322dc1-a1\\in\\wfp_redirect_harness-0.1.0-py3-none-any.whl").values():
        encode_command(script)   # raises if too long for cmd.exe
