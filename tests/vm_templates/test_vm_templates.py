"""Static checks of vm-templates/ (nothing is built here; README "Tests")."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 is not installed (pip install python-hcl2)")

ROOT = Path(__file__).resolve().parents[2]
VM = ROOT / "vm-templates"
HCL_FILES = sorted(VM.glob("*.pkr.hcl"))
XML_FILES = sorted(VM.rglob("*.xml"))
SCRIPTS = sorted((VM / "scripts").glob("*.ps1"))
TEMPLATES = {"ws2022": "wfp-ws2022", "ws2025": "wfp-ws2025", "win11": "wfp-win11"}
UNATTEND = "{urn:schemas-microsoft-com:unattend}"
SCRIPT_NAME = re.compile(r"[\w.-]+\.ps1\b")


def unquote(value):
    """python-hcl2 5+ keeps the quotes of string literals and block labels; drop them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unquote(v) for v in value]
    return value


def load(path: Path) -> dict:
    with path.open() as fh:
        return unquote(hcl2.load(fh))


def windows_hcl() -> dict:
    return load(VM / "windows.pkr.hcl")


def build_sources() -> dict[str, dict]:
    build = windows_hcl()["build"][0]
    sources = {}
    for entry in build["source"]:
        for label, body in entry.items():
            assert label == "vsphere-iso.windows"
            sources[body["name"]] = body
    return sources


def test_there_is_something_to_check():
    assert {p.name for p in HCL_FILES} >= {"windows.pkr.hcl", "variables.pkr.hcl"}
    assert {p.stem for p in (VM / "autounattend").glob("*.xml")} == set(TEMPLATES)
    assert SCRIPTS


@pytest.mark.parametrize("path", HCL_FILES, ids=lambda p: p.name)
def test_every_packer_file_parses(path):
    data = load(path)
    assert set(data) & {"variable", "source", "build", "packer", "locals"}


@pytest.mark.parametrize("path", XML_FILES, ids=lambda p: str(p.relative_to(VM)))
def test_every_xml_file_is_well_formed(path):
    ET.parse(path)


def test_one_build_per_os_producing_the_named_templates():
    sources = build_sources()
    assert {name: body["vm_name"] for name, body in sources.items()} == TEMPLATES
    for name, body in sources.items():
        assert f"autounattend/{name}.xml" in body["cd_content"]["autounattend.xml"]
    text = (VM / "windows.pkr.hcl").read_text()
    for template in TEMPLATES.values():
        assert f'"{template}"' in text


def test_source_is_efi_without_secure_boot_with_baseline_snapshot_and_template():
    source = windows_hcl()["source"][0]["vsphere-iso"]["windows"]
    assert source["firmware"] == "efi"             # never "efi-secure": testsigning
    assert source["create_snapshot"] is True
    assert source["snapshot_name"] == "baseline"
    assert source["convert_to_template"] is True
    assert source["communicator"] == "ssh"
    assert "ssh_password" not in source            # key-only


def test_secrets_are_sensitive_variables_without_literal_values():
    variables = {name: body for entry in load(VM / "variables.pkr.hcl")["variable"]
                 for name, body in entry.items()}
    for name in ("vcenter_username", "vcenter_password", "guest_admin_password"):
        assert variables[name].get("sensitive") is True, name
        assert str(variables[name].get("default", "")).startswith("${env("), name
    source = windows_hcl()["source"][0]["vsphere-iso"]["windows"]
    assert source["password"] == "${var.vcenter_password}"
    assert source["username"] == "${var.vcenter_username}"
    for path in HCL_FILES:
        assert not re.search(r'(?i)password\s*=\s*"(?!\$\{)', path.read_text()), path.name


def names_in(text: str) -> set[str]:
    return set(SCRIPT_NAME.findall(text))


def test_scripts_named_by_hcl_and_xml_exist_and_every_script_is_named():
    named_hcl = set().union(*(names_in(p.read_text()) for p in HCL_FILES))
    named_xml = set().union(*(names_in(p.read_text()) for p in XML_FILES))
    present = {p.name for p in SCRIPTS}
    assert named_hcl <= present, f"HCL names missing scripts: {named_hcl - present}"
    assert named_xml <= present, f"XML names missing scripts: {named_xml - present}"
    assert present <= named_hcl | named_xml, f"scripts nobody runs: {present - named_hcl - named_xml}"
    # The script the unattend runs is also put on the CD by the HCL.
    assert named_xml and named_xml <= names_in(str(windows_hcl()["source"][0]["vsphere-iso"]["windows"]["cd_files"]))


def unattend_commands(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    return [e.text or "" for e in root.iter() if e.tag in (f"{UNATTEND}CommandLine", f"{UNATTEND}Path")]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_unattend_runs_bootstrap_and_keeps_passwords_out(name):
    path = VM / "autounattend" / f"{name}.xml"
    root = ET.parse(path).getroot()
    commands = " ".join(unattend_commands(path))
    assert "bootstrap.ps1" in commands and "WFPSETUP" in commands
    passwords = [v.text for p in root.iter() if p.tag.endswith("Password")
                 for v in p.iter(f"{UNATTEND}Value")]
    assert passwords and all(v == "${admin_password}" for v in passwords)
    passes = {s.get("pass") for s in root.iter(f"{UNATTEND}settings")}
    assert passes == {"windowsPE", "specialize", "oobeSystem"}


def test_matrix_account_and_host_key_pin_exist_on_every_template():
    """Issue "Windows day one" fault 4: the matrix logged in as an account the
    templates never created and pinned an extraConfig key nothing set."""
    import hcl2
    from harness.vm.config import load_matrix
    guests = load_matrix(VM / "guest-matrix.toml")
    boot = (VM / "scripts" / "bootstrap.ps1").read_text()
    hcl = (VM / "windows.pkr.hcl").read_text()
    src = list(list(hcl2.loads(hcl)["source"][0].values())[0].values())[0]
    params = {k.strip('"'): v for k, v in src["configuration_parameters"].items()}
    for g in guests:
        assert f"New-LocalUser -Name '{g.account}'" in boot and "Add-LocalGroupMember -SID 'S-1-5-32-544'" in boot
        assert g.host_key.guestinfo in params                  # recorded in the template's extraConfig
    assert "ssh_host_key_file" in str(params) and src["remove_cdrom"] in (True, [True])
    assert str(src["ssh_username"]).strip('"') == "wfpadmin"
    # the host key the build generated is what bootstrap installs
    assert "ssh_host_ed25519_key" in boot and '"ssh_host_ed25519_key"' in hcl


def test_win11_unattend_bypasses_tpm_and_secure_boot_checks():
    commands = " ".join(unattend_commands(VM / "autounattend" / "win11.xml"))
    assert "BypassTPMCheck" in commands and "BypassSecureBootCheck" in commands


def test_provisioning_covers_what_the_orchestrator_expects():
    text = {p.name: p.read_text() for p in SCRIPTS}
    joined = "\n".join(text.values())
    assert "testsigning on" in text["configure-debug.ps1"]
    assert "CrashDumpEnabled -Value 2" in text["configure-debug.ps1"]
    assert "MinidumpDir" in text["configure-debug.ps1"]
    assert "Win32_PageFileSetting" in text["configure-debug.ps1"]
    assert "PktMon.exe" in text["configure-debug.ps1"]
    assert "PasswordAuthentication no" in text["bootstrap.ps1"]
    assert "administrators_authorized_keys" in text["bootstrap.ps1"]
    assert "OpenSSH.Server" in text["bootstrap.ps1"]
    assert "setup64.exe" in text["bootstrap.ps1"]                     # VMware Tools
    assert "info-set" not in joined            # a guest never publishes its own pin
    assert "S-1-5-32-544" in text["check-hostkey.ps1"]
    assert "OptionId.WindowsDesktopDebuggers" in text["install-tools.ps1"]
    assert "WFP_PYTHON_SHA256" in text["install-tools.ps1"]
    assert "sys.version_info[:2] == (3, 11)" in text["install-tools.ps1"]
    assert "$ErrorActionPreference = 'Stop'" in joined
    for name, body in text.items():
        assert body.startswith("#"), f"{name} should say what it is for"
