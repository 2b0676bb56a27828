"""The lab config loader: good files load into frozen dataclasses with sane
defaults; every bad file is refused with a ConfigError naming file and key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.vm.config import ConfigError, LabConfig, Timeouts, load_config, load_matrix
from vsphere_testlib import REPO, openssh_host_key

HOST_KEY = openssh_host_key()

GUEST0 = """
[[guests]]
name = "ws2022"
template = "wfp-ws2022"
snapshot = "baseline"
os_build = "10.0.20348"
account = "wfpadmin"
ssh_port = 2222
ssh_key_file = "keys/id_ed25519"
host_key = "{host_key}"
"""

GUEST1 = """
[[guests]]
name = "win11"
template = "wfp-win11"
snapshot = "baseline"
os_build = "10.0.26100"
account = "wfpadmin"
ssh_key_env = "WFP_GUEST_SSH_KEY"
host_key_file = "keys/win11_host_key.pub"
secure_boot = false
"""

BASE = """
[vcenter]
url = "https://vcenter.lab.example/sdk"
ca_bundle = "certs/ca.pem"
user_env = "WFP_VCENTER_USER"
password_env = "WFP_VCENTER_PASSWORD"

[placement]
datacenter = "DC0"
cluster = "DC0_C0"
folder = "wfp-ci/nightly"
datastore = "LocalDS_0"

[run]
artifact_dir = "out"
parallelism = 3

[timeouts]
tools = 1200
"""


@pytest.fixture
def labdir(tmp_path: Path) -> Path:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id_ed25519").write_text("not read at load time\n")
    (tmp_path / "keys" / "win11_host_key.pub").write_text(openssh_host_key() + "\n")
    return tmp_path


def write(d: Path, text: str, name: str = "lab.toml") -> Path:
    p = d / name
    p.write_text(text)
    return p


def good_text() -> str:
    return BASE + GUEST0.format(host_key=HOST_KEY) + GUEST1


def test_good_config_loads_with_resolved_paths_and_defaults(labdir: Path) -> None:
    cfg = load_config(write(labdir, good_text()))
    assert isinstance(cfg, LabConfig)
    vc = cfg.vcenter
    assert (vc.host, vc.port, vc.path) == ("vcenter.lab.example", 443, "/sdk")
    assert vc.ca_bundle == labdir / "certs" / "ca.pem"  # relative to the config file
    assert vc.insecure_skip_tls_verify is False and vc.thumbprint_sha256 is None
    assert (vc.user_env, vc.password_env) == ("WFP_VCENTER_USER", "WFP_VCENTER_PASSWORD")
    assert cfg.placement.folder == "wfp-ci/nightly" and cfg.placement.resource_pool is None
    assert cfg.run.artifact_dir == labdir / "out" and cfg.run.parallelism == 3
    assert cfg.timeouts.tools == 1200 and cfg.timeouts.clone == Timeouts().clone
    g0, g1 = cfg.guests
    assert (g0.name, g0.ssh_port, g0.ssh_key_file, g0.host_key.kind) == \
        ("ws2022", 2222, labdir / "keys" / "id_ed25519", "literal")
    assert (g1.ssh_port, g1.ssh_key_env, g1.host_key.file, g1.secure_boot) == \
        (22, "WFP_GUEST_SSH_KEY", labdir / "keys" / "win11_host_key.pub", False)
    assert cfg.guest("win11") is g1
    assert (g0.suite, cfg.run.suite_select) == ("guest", "")       # the suite runs on the guest, all of it
    cfg = load_config(write(labdir, good_text().replace("ssh_port = 2222", 'ssh_port = 2222\nsuite = "controller"')
                            .replace("parallelism = 3", 'parallelism = 3\nsuite_select = "test_sockets"')))
    assert (cfg.guests[0].suite, cfg.run.suite_select) == ("controller", "test_sockets")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run.parallelism = 9  # type: ignore[misc]


def test_thumbprint_is_normalised_and_pin_alone_is_enough(labdir: Path) -> None:
    text = good_text().replace('ca_bundle = "certs/ca.pem"', 'thumbprint_sha256 = "' + "ab" * 32 + '"')
    cfg = load_config(write(labdir, text))
    assert cfg.vcenter.thumbprint_sha256 == ":".join(["AB"] * 32)
    assert cfg.vcenter.ca_bundle is None


def test_insecure_opt_out_only_by_its_exact_name(labdir: Path) -> None:
    text = good_text().replace('ca_bundle = "certs/ca.pem"', "insecure_skip_tls_verify = true")
    assert load_config(write(labdir, text)).vcenter.insecure_skip_tls_verify is True
    for spelling in ("insecure = true", "insecure_skip_tls_verification = true", "verify_tls = false"):
        text = good_text().replace('ca_bundle = "certs/ca.pem"', spelling)
        with pytest.raises(ConfigError) as e:
            load_config(write(labdir, text))
        assert e.value.key == "vcenter." + spelling.split(" ")[0]
        assert "unknown key" in str(e.value)


def test_matrix_include_is_relative_to_the_config_file(labdir: Path) -> None:
    (labdir / "m").mkdir()
    (labdir / "m" / "keys").mkdir()
    (labdir / "m" / "keys" / "k.pub").write_text(HOST_KEY)
    write(labdir / "m", GUEST1.replace("keys/win11_host_key.pub", "keys/k.pub"), "matrix.toml")
    cfg = load_config(write(labdir, 'matrix = "m/matrix.toml"\n' + BASE))
    assert cfg.matrix_file == labdir / "m" / "matrix.toml"
    assert [g.name for g in cfg.guests] == ["win11"]
    assert cfg.guests[0].host_key.file == labdir / "m" / "keys" / "k.pub"  # relative to the matrix file


def test_repository_guest_matrix_loads() -> None:
    guests = load_matrix(REPO / "vm-templates" / "guest-matrix.toml")
    assert [g.template for g in guests] == ["wfp-ws2022", "wfp-ws2025", "wfp-win11"]
    assert {g.snapshot for g in guests} == {"baseline"}
    assert all(g.host_key.guestinfo and g.ssh_key_env and g.secure_boot is False for g in guests)


def test_repository_guest_matrix_loads_through_a_lab_config(labdir: Path) -> None:
    matrix = REPO / "vm-templates" / "guest-matrix.toml"
    cfg = load_config(write(labdir, f'matrix = "{matrix}"\n' + BASE))
    assert len(cfg.guests) == 3 and cfg.matrix_file == matrix


# (how to break the good file, key path the error must name, words it must contain)
BAD = [
    (lambda t: t.replace('snapshot = "baseline"\nos_build = "10.0.26100"', 'os_build = "10.0.26100"'),
     "guests[1].snapshot", "required"),
    (lambda t: t.replace('password_env = "WFP_VCENTER_PASSWORD"', 'password = "hunter2"'),
     "vcenter.password", "literal secrets"),
    (lambda t: t.replace('user_env = "WFP_VCENTER_USER"', 'user = "administrator@vsphere.local"'),
     "vcenter.user", "user_env"),
    (lambda t: t.replace('account = "wfpadmin"\nssh_port', 'account = "wfpadmin"\npassword = "x"\nssh_port'),
     "guests[0].password", "literal secrets"),
    (lambda t: t.replace('url = "https://', 'url = "http://'), "vcenter.url", "https"),
    (lambda t: t.replace('url = "https://', 'url = "https://root:pw@'), "vcenter.url", "credentials"),
    (lambda t: t.replace('ca_bundle = "certs/ca.pem"\n', ""), "vcenter.ca_bundle", "required"),
    (lambda t: t.replace('ca_bundle = "certs/ca.pem"', 'ca_bundle = "certs/nope.pem"'),
     "vcenter.ca_bundle", "file not found"),
    (lambda t: t.replace('ca_bundle = "certs/ca.pem"', 'insecure_skip_tls_verify = "true"'),
     "vcenter.insecure_skip_tls_verify", "true or false"),
    (lambda t: t.replace('user_env = "WFP_VCENTER_USER"', 'user_env = "WFP_VCENTER_USER"\ninsecure_skip_tls_verify = true'),
     "vcenter.insecure_skip_tls_verify", "contradicts"),
    (lambda t: t.replace('ca_bundle = "certs/ca.pem"', 'thumbprint_sha256 = "' + "ab:" * 19 + 'ab"'),
     "vcenter.thumbprint_sha256", "SHA-1"),
    (lambda t: t.replace('ca_bundle = "certs/ca.pem"', 'thumbprint_sha256 = "zz"'),
     "vcenter.thumbprint_sha256", "64 hex"),
    (lambda t: t.replace('user_env = "WFP_VCENTER_USER"', 'user_env = "s3cr3t value!"'),
     "vcenter.user_env", "NAME of an environment variable"),
    (lambda t: t.replace('datastore = "LocalDS_0"\n', ""), "placement.datastore", "required"),
    (lambda t: t.replace('cluster = "DC0_C0"\n', ""), "placement.cluster", "cluster or resource_pool"),
    (lambda t: t.replace("[placement]", "[placement]\nhost = \"esx1\""), "placement.host", "unknown key"),
    (lambda t: t.replace("ssh_port = 2222", "ssh_port = 0"), "guests[0].ssh_port", "between 1 and 65535"),
    (lambda t: t.replace("ssh_port = 2222", "ssh_port = true"), "guests[0].ssh_port", "integer"),
    (lambda t: t.replace("ssh_port = 2222", 'ssh_port = "22"'), "guests[0].ssh_port", "integer"),
    (lambda t: t.replace('ssh_key_env = "WFP_GUEST_SSH_KEY"', 'ssh_key_env = "WFP_GUEST_SSH_KEY"\nssh_key_file = "keys/id_ed25519"'),
     "guests[1].ssh_key_file", "exactly one"),
    (lambda t: t.replace('ssh_key_file = "keys/id_ed25519"\n', ""), "guests[0].ssh_key_file", "exactly one"),
    (lambda t: t.replace('host_key_file = "keys/win11_host_key.pub"\n', ""), "guests[1].host_key", "always verified"),
    (lambda t: t.replace(HOST_KEY, "ssh-ed25519 AAAAnotbase64!!"), "guests[0].host_key", "OpenSSH public key"),
    (lambda t: t.replace(HOST_KEY, "ssh-rsa " + HOST_KEY.split()[1]), "guests[0].host_key", "does not match"),
    (lambda t: t.replace('host_key_file = "keys/win11_host_key.pub"', 'host_key_guestinfo = "ssh.hostkey"'),
     "guests[1].host_key_guestinfo", "guestinfo."),
    (lambda t: t.replace('name = "win11"', 'name = "ws2022"'), "guests[1].name", "duplicate"),
    (lambda t: t.replace("tools = 1200", "tools = -1"), "timeouts.tools", "positive"),
    (lambda t: t.replace("tools = 1200", "tools = 1200\nboot = 5"), "timeouts.boot", "unknown key"),
    (lambda t: t.replace("parallelism = 3", "parallelism = 0"), "run.parallelism", "between 1"),
    (lambda t: t.replace("ssh_port = 2222", 'ssh_port = 2222\nsuite = "vm"'), "guests[0].suite",
     "guest, controller"),
    (lambda t: t.replace("parallelism = 3", 'parallelism = 3\nsuite_select = "a\\nb"'), "run.suite_select",
     "control characters"),
    (lambda t: 'matrix = "other.toml"\n' + t, "matrix", "not both"),
    (lambda t: t.replace("[vcenter]", "[vcentre]", 1), "vcentre", "did you mean 'vcenter'"),
    (lambda t: t.split("[[guests]]")[0], "guests", "required"),
]


@pytest.mark.parametrize("breaker,key,words", BAD, ids=[f"{k}:{w}" for _, k, w in BAD])
def test_bad_config_names_file_and_key(labdir: Path, breaker, key: str, words: str) -> None:
    bad = breaker(good_text())
    assert bad != good_text(), "the breaker must change the file"
    path = write(labdir, bad)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.key == key
    assert e.value.file == str(path)
    assert str(e.value).startswith(f"{path}: {key}: ")
    assert words in str(e.value)


def test_error_text_never_echoes_a_misplaced_secret(labdir: Path) -> None:
    secret = "Zx9-very-secret-Qq"
    for text in (good_text().replace('user_env = "WFP_VCENTER_USER"', f'user_env = "{secret}"'),
                 good_text().replace('password_env = "WFP_VCENTER_PASSWORD"', f'password = "{secret}"')):
        with pytest.raises(ConfigError) as e:
            load_config(write(labdir, text))
        assert secret not in str(e.value) and secret not in repr(e.value.args)


def test_error_inside_the_matrix_file_names_the_matrix_file(labdir: Path) -> None:
    m = write(labdir, GUEST1.replace('account = "wfpadmin"\n', ""), "matrix.toml")
    with pytest.raises(ConfigError) as e:
        load_config(write(labdir, 'matrix = "matrix.toml"\n' + BASE))
    assert (e.value.file, e.value.key) == (str(m), "guests[0].account")


def test_missing_matrix_file_and_invalid_toml(labdir: Path) -> None:
    p = write(labdir, 'matrix = "absent.toml"\n' + BASE)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.key == "matrix" and "file not found" in str(e.value)
    p = write(labdir, "[vcenter\nurl=")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.file == str(p) and "invalid TOML" in str(e.value)
