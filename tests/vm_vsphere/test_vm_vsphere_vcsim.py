"""harness.vm.vsphere against the real vCenter simulator over verified TLS.

No pyvmomi mocks: each test speaks SOAP to tools/vcsim on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import traceback

import pytest
from pyVmomi import vim

from harness.vm.errors import (
    CloneError, ConnectError, CredentialsError, InfrastructureError, InventoryError, IpTimeout,
    SnapshotError, TlsError, ToolsTimeout,
)
from harness.vm.vsphere import TAG_EXPIRES, TAG_GUEST, TAG_RUN_ID, VSphere, build_ssl_context, preflight
from vsphere_testlib import CANARY_PASSWORD, FOLDER, MATRIX_TEMPLATES, PASSWORD_ENV, USER_ENV, VC_USER


def connect(lab, vcsim, **kw) -> VSphere:
    v = VSphere(lab, env=kw.pop("env", None) or vcsim.env(), poll_interval=0.02, max_poll_interval=0.2)
    v.connect()
    return v


def guest(lab, template: str):
    return next(g for g in lab.guests if g.template == template)


# ---------------------------------------------------------------------------
# TLS


def test_right_ca_connects(lab, vcsim) -> None:
    v = connect(lab, vcsim)
    try:
        assert v.tls_mode == "ca_bundle"
        assert "vCenter" in v.content.about.fullName
    finally:
        v.close()


def test_cert_from_wrong_ca_is_refused(make_lab, vcsim) -> None:
    lab = make_lab(vcenter=f'ca_bundle = "{vcsim.pki.wrong_ca_pem}"')
    with pytest.raises(TlsError) as e:
        connect(lab, vcsim)
    assert isinstance(e.value, InfrastructureError) and e.value.phase == "tls"
    assert "certificate rejected" in str(e.value) and str(e.value).startswith("INFRASTRUCTURE fault")


def test_pinned_thumbprint_alone_connects(make_lab, vcsim) -> None:
    lab = make_lab(vcenter=f'thumbprint_sha256 = "{vcsim.thumbprint_sha256.lower()}"')
    v = connect(lab, vcsim)
    try:
        assert v.tls_mode == "thumbprint"
        assert v.find_vm("wfp-ws2022") is not None  # more requests, more connections, all pinned
    finally:
        v.close()


@pytest.mark.parametrize("with_ca", [False, True], ids=["pin-only", "right-ca-plus-wrong-pin"])
def test_wrong_thumbprint_is_refused(make_lab, vcsim, with_ca: bool) -> None:
    wrong = vcsim.thumbprint_sha256[:-2] + ("00" if not vcsim.thumbprint_sha256.endswith("00") else "11")
    ca = f'ca_bundle = "{vcsim.pki.ca_pem}"\n' if with_ca else ""
    lab = make_lab(vcenter=f'{ca}thumbprint_sha256 = "{wrong}"')
    with pytest.raises(TlsError) as e:
        connect(lab, vcsim)
    assert e.value.phase == "tls" and "pinned" in str(e.value)


def test_pinned_context_stays_verifying_after_use(make_lab, vcsim) -> None:
    # pyvmomi's own thumbprint option flips a shared context to CERT_NONE; ours must not change.
    lab = make_lab(vcenter=f'thumbprint_sha256 = "{vcsim.thumbprint_sha256}"')
    ctx = build_ssl_context(lab.vcenter)
    import http.client
    for _ in range(3):
        c = http.client.HTTPSConnection("127.0.0.1", vcsim.port, context=ctx, timeout=30)
        c.request("GET", "/about")
        assert c.getresponse().status == 200
        c.close()
    bad = make_lab(vcenter='thumbprint_sha256 = "' + "00" * 32 + '"')
    bad_ctx = build_ssl_context(bad.vcenter)
    for _ in range(2):
        c = http.client.HTTPSConnection("127.0.0.1", vcsim.port, context=bad_ctx, timeout=30)
        with pytest.raises(ssl.SSLCertVerificationError):
            c.request("GET", "/about")


def test_insecure_opt_out_connects_and_warns(make_lab, vcsim, caplog) -> None:
    lab = make_lab(vcenter="insecure_skip_tls_verify = true")
    with caplog.at_level(logging.WARNING, logger="harness.vm.vsphere"):
        v = connect(lab, vcsim)
        v.close()
    assert any("verification" in r.getMessage() and "OFF" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------
# Credentials


def test_credentials_come_from_the_named_environment_variables(lab, vcsim, monkeypatch) -> None:
    monkeypatch.setenv(USER_ENV, VC_USER)
    monkeypatch.setenv(PASSWORD_ENV, CANARY_PASSWORD)
    with VSphere(lab) as v:  # default: os.environ
        assert v.content.sessionManager.currentSession.userName == VC_USER


@pytest.mark.parametrize("missing", [USER_ENV, PASSWORD_ENV])
def test_unset_credential_variable_is_named(lab, vcsim, missing: str) -> None:
    env = vcsim.env()
    env[missing] = ""
    with pytest.raises(CredentialsError) as e:
        connect(lab, vcsim, env=env)
    assert missing in str(e.value) and e.value.phase == "credentials"
    assert CANARY_PASSWORD not in str(e.value)


def test_wrong_password_is_a_connect_fault_without_the_password(lab, vcsim) -> None:
    wrong = "WRONG-" + CANARY_PASSWORD
    with pytest.raises(ConnectError) as e:
        connect(lab, vcsim, env=vcsim.env(wrong))
    assert "login refused" in str(e.value) and PASSWORD_ENV in str(e.value)
    assert CANARY_PASSWORD not in "".join(traceback.format_exception(e.value))


# ---------------------------------------------------------------------------
# Clone life cycle


@pytest.mark.parametrize("template", MATRIX_TEMPLATES)
def test_clone_power_on_wait_destroy_leaves_no_clone(vs, lab, run_id, template: str) -> None:
    g = guest(lab, template)
    clone = vs.clone(g, run_id)
    try:
        assert clone.name.startswith(f"t-{g.name}-{run_id}-")
        tags = vs.extra_config(clone.vm)
        assert tags[TAG_RUN_ID] == run_id and tags[TAG_GUEST] == g.name
        assert dt.datetime.fromisoformat(tags[TAG_EXPIRES]) == clone.expires
        assert clone.vm.parent.name == FOLDER
        assert clone.vm.resourcePool == vs.resource_pool()
        assert not clone.vm.config.template
        assert vs.start(clone) == "127.0.0.1"
        assert clone.vm.guest.toolsRunningStatus == "guestToolsRunning"
        assert vs.host_key(clone) == vs.extra_config(vs.template(g))["guestinfo.wfp.ssh_host_key"]
    finally:
        vs.destroy(clone)
    assert clone.ip is None
    assert vs.find_vm(clone.name) is None
    assert [n for _, n, t in vs.list_clones() if t[TAG_RUN_ID] == run_id] == []
    vs.destroy(clone)  # idempotent: destroying a destroyed clone is not an error


def test_host_key_pin_comes_from_the_template_never_from_the_clone(vs, lab, run_id) -> None:
    """A running guest can write guestinfo (rpctool info-set) but not the
    template's extraConfig: a key set on the clone must be ignored."""
    from pyVmomi import vim

    from harness.vm.errors import CloneError
    from vsphere_testlib import openssh_host_key
    g = guest(lab, "wfp-ws2022")
    clone = vs.clone(g, run_id)
    try:
        attacker = openssh_host_key()
        spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key="guestinfo.wfp.ssh_host_key", value=attacker)])
        vs._wait_task(clone.vm.ReconfigVM_Task(spec=spec), 60, CloneError, "reconfigure", clone.name)
        assert vs.extra_config(clone.vm)["guestinfo.wfp.ssh_host_key"] == attacker
        assert vs.host_key(clone) == vs.extra_config(vs.template(g))["guestinfo.wfp.ssh_host_key"] != attacker
    finally:
        vs.destroy(clone)


def test_revert_rereads_the_guest_ip(make_lab, vcsim, run_id) -> None:
    lab = make_lab(guests=["wfp-dhcp"])
    with connect(lab, vcsim) as vs:
        clone = vs.clone(lab.guests[0], run_id)
        try:
            assert vs.start(clone) == "127.0.0.1"
            vs.snapshot_clone(clone, "clean")
            # The simulated guest gets the next DHCP address after every revert.
            assert vs.revert(clone, "clean") == "127.0.0.2"
            assert clone.ip == "127.0.0.2"
            assert vs.revert(clone, "clean") == "127.0.0.1"
            with pytest.raises(SnapshotError):
                vs.revert(clone, "no-such-snapshot")
        finally:
            vs.destroy(clone)


def test_tools_never_running_is_a_tools_timeout(make_lab, vcsim, run_id) -> None:
    lab = make_lab(guests=["wfp-notools"])
    with connect(lab, vcsim) as vs:
        clone = vs.clone(lab.guests[0], run_id)
        try:
            vs.power_on(clone)
            with pytest.raises(ToolsTimeout) as e:
                vs.wait_tools(clone, timeout=0.5)
            assert isinstance(e.value, InfrastructureError) and e.value.phase == "tools"
            assert e.value.vm == clone.name and "guestToolsNotRunning" in str(e.value)
        finally:
            vs.destroy(clone)
        assert vs.find_vm(clone.name) is None


def test_no_guest_ip_is_an_ip_timeout(make_lab, vcsim, run_id) -> None:
    lab = make_lab(guests=["wfp-noip"])
    with connect(lab, vcsim) as vs:
        clone = vs.clone(lab.guests[0], run_id)
        try:
            vs.power_on(clone)
            vs.wait_tools(clone)
            with pytest.raises(IpTimeout) as e:
                vs.wait_ip(clone, timeout=0.5)
            assert e.value.phase == "ip" and clone.ip is None
        finally:
            vs.destroy(clone)


def test_waiting_on_a_powered_off_clone_fails_fast(vs, lab, run_id) -> None:
    clone = vs.clone(lab.guests[0], run_id)
    try:
        with pytest.raises(InfrastructureError) as e:
            vs.wait_tools(clone)  # never powered on: no point waiting 30 s
        assert e.value.phase == "power" and "poweredOff" in str(e.value)
    finally:
        vs.destroy(clone)


def test_clone_fault_in_vcsim_is_an_infrastructure_fault(make_lab, vcsim, run_id) -> None:
    lab = make_lab(guests=["wfp-broken"])
    with connect(lab, vcsim) as vs:
        with pytest.raises(CloneError) as e:
            vs.clone(lab.guests[0], run_id)
        err = e.value
        assert isinstance(err, InfrastructureError) and err.kind == "infrastructure"
        assert err.phase == "clone" and "NoDiskSpace" in str(err)
        assert str(err).startswith("INFRASTRUCTURE fault [clone")
        assert [n for _, n, t in vs.list_clones() if t[TAG_RUN_ID] == run_id] == []


def test_missing_template_and_snapshot_are_inventory_faults(make_lab, vcsim, run_id) -> None:
    lab = make_lab(guests=["wfp-nosnap"])
    with connect(lab, vcsim) as vs:
        with pytest.raises(SnapshotError) as e:
            vs.clone(lab.guests[0], run_id)
        assert "'baseline' not found" in str(e.value) and e.value.vm == "wfp-nosnap"
        gone = type(lab.guests[0])(**{**lab.guests[0].__dict__, "template": "wfp-absent"})
        with pytest.raises(InventoryError) as e2:
            vs.clone(gone, run_id)
        assert "wfp-absent" in str(e2.value) and e2.value.phase == "inventory"


# ---------------------------------------------------------------------------
# Janitor


def test_janitor_removes_run_and_expired_clones_only(vs, lab, run_id) -> None:
    g = lab.guests[0]
    mine = [vs.clone(g, run_id), vs.clone(lab.guests[1], run_id)]
    other_run = vs.clone(g, run_id + "-other", ttl_hours=1)
    long_lived = vs.clone(g, run_id + "-keep", ttl_hours=100)
    vs.power_on(mine[0])  # a running clone is powered off before destroy
    # A VM in the same folder without our tag must never be touched.
    stranger = f"stranger-{run_id}"
    tmpl = vs.template(g)
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=vs.resource_pool()), powerOn=False)
    vs._wait_task(tmpl.CloneVM_Task(folder=vs.folder(), name=stranger, spec=spec), 60, InfrastructureError,
                  "test setup", stranger)
    try:
        r = vs.janitor(run_id=run_id, dry_run=True)
        assert sorted(r.destroyed) == sorted(c.name for c in mine)
        assert all(vs.find_vm(c.name) for c in mine)  # dry run destroyed nothing

        r = vs.janitor(run_id=run_id)
        assert sorted(r.destroyed) == sorted(c.name for c in mine) and not r.failed
        assert {other_run.name, long_lived.name} <= set(r.kept)
        assert all(vs.find_vm(c.name) is None for c in mine)

        # Two hours later the 1-hour clone has expired; the 100-hour one has not.
        r = vs.janitor(now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2))
        assert other_run.name in r.destroyed and long_lived.name not in r.destroyed
        assert vs.find_vm(other_run.name) is None
        assert vs.find_vm(long_lived.name) is not None
        assert vs.find_vm(stranger) is not None and vs.find_vm(g.template) is not None
    finally:
        vs.destroy(long_lived)
        vs._destroy_vm(vs.find_vm(stranger), stranger)


# ---------------------------------------------------------------------------
# Pre-flight


def test_preflight_reports_templates_snapshots_firmware_secure_boot(make_lab, vcsim) -> None:
    lab = make_lab(guests=[*MATRIX_TEMPLATES, "wfp-secureboot", "wfp-bios", "wfp-nosnap"])
    r = preflight(lab, env=vcsim.env())
    assert r.tls == "ca_bundle" and r.vcenter_url == lab.vcenter.url and r.api_version
    assert r.datastore == "LocalDS_0" and r.datastore_free_gb and r.datastore_free_gb > 0
    by = {t.template: t for t in r.templates}
    for name in MATRIX_TEMPLATES:
        t = by[name]
        assert (t.found, t.snapshot_found, t.is_template, t.firmware, t.secure_boot, t.problems) == \
            (True, True, True, "efi", False, [])
    assert by["wfp-secureboot"].secure_boot is True
    assert any("Secure Boot is ON" in p for p in by["wfp-secureboot"].problems)
    assert by["wfp-bios"].firmware == "bios" and by["wfp-bios"].secure_boot is False
    assert by["wfp-nosnap"].snapshot_found is False
    assert any("'baseline' not found" in p for p in by["wfp-nosnap"].problems)
    assert not r.ok and len(r.all_problems()) == 2
    assert r.to_dict()["ok"] is False


def test_preflight_of_a_healthy_lab_is_ok_and_checks_space(make_lab, vcsim) -> None:
    assert preflight(make_lab(), env=vcsim.env()).ok
    r = preflight(make_lab(min_free_gb=1e9), env=vcsim.env())
    assert not r.ok and any("less than run.min_datastore_free_gb" in p for p in r.problems)
    r = preflight(make_lab(guests=["wfp-absent"]), env=vcsim.env())
    assert not r.ok and r.templates[0].found is False


def test_preflight_refuses_an_untrusted_vcenter(make_lab, vcsim) -> None:
    with pytest.raises(TlsError):
        preflight(make_lab(vcenter=f'ca_bundle = "{vcsim.pki.wrong_ca_pem}"'), env=vcsim.env())


# ---------------------------------------------------------------------------
# Secrets


def test_canary_password_never_in_logs_or_exceptions(make_lab, vcsim, run_id, caplog) -> None:
    texts: list[str] = []

    def keep(e: BaseException) -> None:
        texts.extend([str(e), repr(e), "".join(traceback.format_exception(e))])

    caplog.set_level(logging.DEBUG)  # every logger, including pyVmomi's
    lab = make_lab(guests=["wfp-ws2022", "wfp-broken", "wfp-notools"])
    with connect(lab, vcsim) as vs:
        clone = vs.clone(lab.guests[0], run_id)
        vs.start(clone)
        vs.destroy(clone)
        with pytest.raises(CloneError) as e:
            vs.clone(lab.guests[1], run_id)
        keep(e.value)
        slow = vs.clone(lab.guests[2], run_id)
        vs.power_on(slow)
        with pytest.raises(ToolsTimeout) as e:
            vs.wait_tools(slow, timeout=0.2)
        keep(e.value)
        vs.janitor(run_id=run_id)
        texts.append(repr(vs.preflight().to_dict()))
    for env in (vcsim.env("bad-" + CANARY_PASSWORD), {USER_ENV: VC_USER, PASSWORD_ENV: ""}):
        with pytest.raises(InfrastructureError) as e:
            connect(lab, vcsim, env=env)
        keep(e.value)
    bad_tls = make_lab(vcenter=f'ca_bundle = "{vcsim.pki.wrong_ca_pem}"')
    with pytest.raises(TlsError) as e:
        connect(bad_tls, vcsim)
    keep(e.value)
    records = caplog.records
    assert records, "the orchestrator logs its steps"
    assert any(run_id in r.getMessage() for r in records)
    blob = "\n".join(texts + [r.getMessage() for r in records] + [caplog.text])
    assert CANARY_PASSWORD not in blob


def test_connect_registers_the_password_for_redaction(lab, vcsim) -> None:
    from harness.vm.redact import SecretRegistry
    reg = SecretRegistry()
    with VSphere(lab, env=vcsim.env(), secrets_registry=reg):
        pass
    assert reg.contains_secret(f"vCenter said: {CANARY_PASSWORD}!")
    assert CANARY_PASSWORD not in reg.redact(f"x {CANARY_PASSWORD} y")


# ---------------------------------------------------------------------------
# Transient faults and the simulator's own life cycle


def test_waits_tolerate_dropped_connections(make_lab, vcsim, run_id, caplog) -> None:
    from harness.vm.config import load_config
    from vsphere_testlib import FlakyProxy
    proxy = FlakyProxy(vcsim.port)
    try:
        lab = make_lab()
        text = lab.source.read_text().replace(f":{vcsim.port}/", f":{proxy.port}/")
        lab.source.write_text(text)
        lab = load_config(lab.source)
        with connect(lab, vcsim) as vs, caplog.at_level(logging.DEBUG, logger="harness.vm.vsphere"):
            clone = vs.clone(lab.guests[0], run_id)
            try:
                vs.power_on(clone)
                proxy.break_next(3)  # open connections die, the next three are refused
                assert vs.wait_ready(clone) == "127.0.0.1"
                assert proxy.cut >= 1
                assert any("transient" in r.getMessage() for r in caplog.records)
            finally:
                vs.destroy(clone)
            assert vs.find_vm(clone.name) is None
    finally:
        proxy.close()


@pytest.mark.parametrize("how", ["sigterm", "stdin-eof"])
def test_vcsim_stops_cleanly(vcsim_binary, vcsim, tmp_path, how: str) -> None:
    import os
    import signal
    import subprocess
    from vsphere_testlib import _read_ready
    env = dict(os.environ, VCSIM_PASSWORD="x")
    p = subprocess.Popen([str(vcsim_binary), "-tlscert", str(vcsim.pki.server_cert), "-tlskey",
                          str(vcsim.pki.server_key), "-templates", "wfp-a,wfp-b", "-watch-stdin"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    try:
        info = _read_ready(p, 60)
        assert info["templates"] == ["wfp-a", "wfp-b"] and info["url"].startswith("https://127.0.0.1:")
        assert "@" not in info["url"]  # no credentials on stdout
        if how == "sigterm":
            p.send_signal(signal.SIGTERM)
        else:
            p.stdin.close()
        assert p.wait(timeout=60) == 0  # stdin stays open in the SIGTERM case
        err = p.stderr.read()
        assert ("stopped (terminated)" if how == "sigterm" else "stopped (stdin closed)") in err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _edit_lab(lab, old: str, new: str):
    from harness.vm.config import load_config
    text = lab.source.read_text()
    assert old in text
    lab.source.write_text(text.replace(old, new))
    return load_config(lab.source)


def test_clone_goes_into_a_named_child_resource_pool(make_lab, vcsim, run_id) -> None:
    lab = _edit_lab(make_lab(), 'cluster = "DC0_C0"', 'resource_pool = "DC0_C0/Resources/DC0_C0_RP1"')
    with connect(lab, vcsim) as vs:
        clone = vs.clone(lab.guests[0], run_id)
        try:
            assert clone.vm.resourcePool.name == "DC0_C0_RP1"
        finally:
            vs.destroy(clone)


def test_preflight_reports_placement_that_does_not_exist(make_lab, vcsim) -> None:
    lab = _edit_lab(make_lab(), f'folder = "{FOLDER}"', 'folder = "no/such/folder"')
    lab = _edit_lab(lab, 'datastore = "LocalDS_0"', 'datastore = "NoSuchDS"')
    r = preflight(lab, env=vcsim.env())
    assert not r.ok
    assert any("'no/such/folder' not found" in p for p in r.problems)
    assert any("'NoSuchDS' not found" in p for p in r.problems)
    assert all(t.found for t in r.templates)  # templates are still checked and reported
