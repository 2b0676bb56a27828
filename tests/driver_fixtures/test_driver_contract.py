"""The C header and harness.sample_driver describe the same bytes.

Static asserts are generated from the Python module and compiled twice: in
user mode with x86_64-w64-mingw32-gcc (what a C proxy sees) and in kernel
mode with clang (what the driver sees). Strings and GUIDs, which C cannot
assert at compile time, are compared against the header text.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from harness import sample_driver as sd

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "driver-fixtures" / "wfp-redirect-callout"
INCLUDE = DRIVER / "include"
HEADER = (INCLUDE / "wfp_redirect_callout.h").read_text()
MINGW_INCLUDE = Path("/usr/share/mingw-w64/include")


def static_asserts() -> str:
    lines = []

    def check(expr: str, what: str):
        lines.append(f'_Static_assert({expr}, "{what}");')

    for layout in (sd.REDIRECT_CONTEXT, sd.RELOAD_RESULT):
        check(f"sizeof({layout.name}) == {layout.size}", f"sizeof {layout.name}")
        for f in layout.fields:
            member = f.c_name or f.name
            check(f"offsetof({layout.name}, {member}) == {f.offset}", f"offset {layout.name}.{member}")
            check(f"sizeof((({layout.name}*)0)->{member}) == {f.size}", f"size {layout.name}.{member}")
    constants = {
        "WFPRC_CONTEXT_MAGIC": sd.CONTEXT_MAGIC,
        "WFPRC_CONTEXT_VERSION": sd.CONTEXT_VERSION,
        "WFPRC_CONTEXT_SIZE": sd.CONTEXT_SIZE,
        "WFPRC_POLICY_VERSION": sd.POLICY_VERSION,
        "WFPRC_MAX_PORTS": sd.MAX_PORTS,
        "WFPRC_MAX_EXCLUDED_PIDS": sd.MAX_EXCLUDED_PIDS,
        "FILE_DEVICE_WFPRC": sd.FILE_DEVICE_WFPRC,
        "IOCTL_WFPRC_RELOAD_POLICY": sd.IOCTL_WFPRC_RELOAD_POLICY,
        "WFPRC_SUBLAYER_WEIGHT": sd.SUBLAYER_WEIGHT,
    }
    for name, value in constants.items():
        check(f"(unsigned int)({name}) == {value}u", name)
    for macro, name in value_name_macros().items():
        check(f"sizeof({macro}) == sizeof(L\"{name}\")", macro)
    return "\n".join(lines) + "\n"


def value_name_macros() -> dict[str, str]:
    found = dict(re.findall(r'#define\s+(WFPRC_VALUE_\w+)\s+L"([^"]*)"', HEADER))
    assert found, "no WFPRC_VALUE_* macros in the header"
    return found


USER_PRELUDE = ("#include <winsock2.h>\n#include <windows.h>\n#include <stddef.h>\n"
                "#include \"wfp_redirect_callout.h\"\n")
KERNEL_PRELUDE = "#include \"wfprc_kernel.h\"\n#include <stddef.h>\n"


def compile_user(path: Path):
    gcc = shutil.which("x86_64-w64-mingw32-gcc")
    if gcc is None:
        pytest.skip("x86_64-w64-mingw32-gcc is not installed (Debian package 'gcc-mingw-w64-x86-64')")
    return subprocess.run([gcc, "-fsyntax-only", "-std=gnu11", "-I", str(INCLUDE), str(path)],
                          capture_output=True, text=True)


def compile_kernel(path: Path):
    clang = shutil.which("clang") or shutil.which("clang-14")
    if clang is None:
        pytest.skip("clang is not installed (Debian package 'clang')")
    return subprocess.run([clang, "--target=x86_64-pc-windows-msvc", "-fgnuc-version=4.2.1",
                           "-fsyntax-only", "-nostdlibinc", "-isystem", str(MINGW_INCLUDE),
                           "-isystem", str(MINGW_INCLUDE / "ddk"), "-I", str(INCLUDE), str(path)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("mode", ["user", "kernel"])
def test_c_layout_and_constants_match_python(tmp_path, mode):
    source = tmp_path / f"contract_{mode}.c"
    source.write_text((USER_PRELUDE if mode == "user" else KERNEL_PRELUDE) + static_asserts())
    result = (compile_user if mode == "user" else compile_kernel)(source)
    if result.returncode != 0:
        pytest.fail(f"C and Python disagree ({mode} mode):\n{result.stderr}")
    assert source.read_text().count("_Static_assert") > 30


def test_generated_asserts_do_fail_on_drift(tmp_path):
    source = tmp_path / "drift.c"
    source.write_text(USER_PRELUDE + static_asserts().replace(
        f"offsetof(WFPRC_REDIRECT_CONTEXT, processId) == {sd.REDIRECT_CONTEXT.offset('process_id')}",
        "offsetof(WFPRC_REDIRECT_CONTEXT, processId) == 1"))
    result = compile_user(source)
    assert result.returncode != 0
    assert "offset WFPRC_REDIRECT_CONTEXT.processId" in result.stderr


def test_value_names_are_the_same_strings():
    names = value_name_macros()
    assert sorted(names.values()) == sorted(sd.VALUE_TYPES)
    c_types = dict(re.findall(r'#define\s+WFPRC_VALUE_\w+\s+L"(\w+)"\s+/\*\s*(REG_\w+)', HEADER))
    assert {n: sd.REG_TYPE_NAMES[t] for n, t in sd.VALUE_TYPES.items()} == c_types


def test_service_and_device_names_match():
    assert f'#define WFPRC_SERVICE_NAME        L"{sd.SERVICE_NAME}"' in HEADER
    assert 'L"\\\\\\\\.\\\\WfpRedirectCallout"' in HEADER       # C spelling of \\.\WfpRedirectCallout
    assert sd.DEVICE_PATH == "\\\\.\\WfpRedirectCallout"
    inf = (DRIVER / "wfp_redirect_callout.inf").read_text()
    assert f'ServiceName        = "{sd.SERVICE_NAME}"' in inf
    assert sd.PARAMETERS_KEY.endswith(f"\\Services\\{sd.SERVICE_NAME}\\Parameters")


def header_guids() -> dict[str, uuid.UUID]:
    out = {}
    for name, parts in re.findall(r"DEFINE_GUID\((WFPRC_\w+),\s*([^)]*)\)", HEADER):
        n = [int(p, 16) for p in parts.replace(" ", "").split(",")]
        out[name] = uuid.UUID(fields=(n[0], n[1], n[2], n[3], n[4],
                                      int.from_bytes(bytes(n[5:11]), "big")))
    return out


def test_wfp_object_keys_match():
    guids = header_guids()
    expected = {"WFPRC_PROVIDER_KEY": sd.PROVIDER_KEY, "WFPRC_SUBLAYER_KEY": sd.SUBLAYER_KEY,
                "WFPRC_CALLOUT_V4_KEY": sd.CALLOUT_V4_KEY, "WFPRC_CALLOUT_V6_KEY": sd.CALLOUT_V6_KEY,
                "WFPRC_FILTER_V4_KEY": sd.FILTER_V4_KEY, "WFPRC_FILTER_V6_KEY": sd.FILTER_V6_KEY}
    assert {k: str(v) for k, v in guids.items()} == expected
    assert len(set(expected.values())) == len(expected)


def test_fallback_layer_guids_and_values_match_the_contract():
    # fwps_prototypes.h restates SDK values; they must equal constants.py.
    from harness.winsock import constants as C
    text = (INCLUDE / "fwps_prototypes.h").read_text()
    for name in ("FWPM_LAYER_ALE_CONNECT_REDIRECT_V4", "FWPM_LAYER_ALE_CONNECT_REDIRECT_V6"):
        parts = re.search(rf"DEFINE_GUID\({name},\s*([^)]*)\)", text).group(1)
        n = [int(p, 16) for p in parts.replace(" ", "").split(",")]
        got = uuid.UUID(fields=(n[0], n[1], n[2], n[3], n[4], int.from_bytes(bytes(n[5:11]), "big")))
        assert got == getattr(C, name)
    assert re.search(r"FWPS_LAYER_ALE_CONNECT_REDIRECT_V4 = (\d+)", text).group(1) == str(
        C.FWPS_LAYER_ALE_CONNECT_REDIRECT_V4)
    for name in ("FWPS_CONNECTION_NOT_REDIRECTED", "FWPS_CONNECTION_REDIRECTED_BY_SELF",
                 "FWPS_CONNECTION_REDIRECTED_BY_OTHER", "FWPS_CONNECTION_PREVIOUSLY_REDIRECTED_BY_SELF"):
        assert re.search(rf"{name} = (\d+)", text).group(1) == str(getattr(C, name))
    for name in ("FWP_CONDITION_FLAG_IS_REAUTHORIZE", "FWPS_RIGHT_ACTION_WRITE",
                 "FWPS_METADATA_FIELD_REDIRECT_RECORD_HANDLE"):
        assert int(re.search(rf"#define {name}\s+(0x[0-9A-Fa-f]+)", text).group(1), 16) == getattr(C, name)
