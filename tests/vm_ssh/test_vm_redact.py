"""Secret redaction: unit properties, and the canary run against a real sshd."""

from __future__ import annotations

import logging
import secrets
import shlex
import traceback
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.vm import redact
from harness.vm.errors import InfrastructureError
from harness.vm.redact import RedactingFilter, SecretRegistry, StreamRedactor, scrub_file, write_scrubbed
from harness.vm.ssh import CommandFailed, CommandHang, KeyLoadError

log = logging.getLogger("tests.vm_ssh.redact")


def make_canary() -> str:
    # Characters that change under repr/JSON/XML/PowerShell escaping.
    return f"cAnArY-{secrets.token_hex(8)}-&<'\"\\>"


def record_text(record: logging.LogRecord) -> str:
    return logging.Formatter("%(message)s %(detail)s").format(record) if hasattr(record, "detail") \
        else logging.Formatter().format(record)


# -- unit properties ---------------------------------------------------
def test_filter_redacts_message_args_exception_and_extra():
    canary = make_canary()
    reg = SecretRegistry()
    reg.add(canary)
    flt = RedactingFilter(reg)
    try:
        raise RuntimeError(f"boom {canary}")
    except RuntimeError:
        import sys
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "msg %s %r", (canary, canary),
                                sys.exc_info())
    rec.detail = f"extra {canary}"
    assert flt.filter(rec) is True
    text = record_text(rec)
    assert canary not in text and repr(canary)[1:-1] not in text
    assert "RuntimeError: boom " + redact.REDACTED in text
    assert rec.detail == "extra " + redact.REDACTED


def test_short_secrets_are_refused_and_empty_ignored():
    reg = SecretRegistry()
    reg.add("")
    reg.add(None)
    assert len(reg) == 0
    with pytest.raises(ValueError):
        reg.add("ab")


def test_escaped_and_utf16_forms_are_scrubbed_from_files(tmp_path):
    canary = make_canary()
    reg = SecretRegistry()
    reg.add(canary)
    xml = tmp_path / "junit.xml"
    from xml.sax.saxutils import escape, quoteattr
    xml.write_text(f'<testsuite><property name="p" value={quoteattr(canary)}/>'
                   f"<system-out>{escape(canary)}</system-out></testsuite>", encoding="utf-8")
    wide = tmp_path / "guest.log"
    wide.write_bytes(f"setup used {canary} here".encode("utf-16-le"))
    assert scrub_file(xml, reg) and scrub_file(wide, reg)
    assert not reg.contains_secret(xml.read_bytes()) and not reg.contains_secret(wide.read_bytes())
    assert "<system-out>" in xml.read_text()
    assert b"s\x00e\x00t\x00u\x00p" in wide.read_bytes()
    assert not scrub_file(xml, reg)  # idempotent: nothing left
    out = write_scrubbed(tmp_path / "report.md", f"# run\npassword={canary}\n", reg)
    assert canary not in out.read_text() and "password=" in out.read_text()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.lists(st.integers(1, 50), min_size=1))
def test_stream_redactor_catches_secrets_split_across_chunks(prefix, suffix, cuts):
    canary = "sekrit-" + "z" * 13
    reg = SecretRegistry()
    reg.add(canary)
    data = prefix + canary.encode() + suffix + canary.encode("utf-16-le")
    sr = StreamRedactor(reg)
    out, i = b"", 0
    for n in cuts * (len(data) // sum(cuts) + 1):
        out += sr.feed(data[i:i + n])
        i += n
        if i >= len(data):
            break
    out += sr.flush()
    assert canary.encode() not in out and canary.encode("utf-16-le") not in out
    # Nothing besides secrets is lost: with no secret, bytes pass unchanged.
    clean = SecretRegistry()
    sr2 = StreamRedactor(clean)
    assert sr2.feed(prefix) + sr2.feed(suffix) + sr2.flush() == prefix + suffix


def test_install_applies_to_handlers_added_later():
    canary = make_canary()
    reg = SecretRegistry()
    reg.add(canary)
    uninstall = redact.install(reg)
    try:
        assert redact.install(reg) is uninstall   # idempotent
        seen: list[str] = []

        class H(logging.Handler):
            def emit(self, record):
                seen.append(self.format(record))

        h = H()
        logging.getLogger("late.child.logger").addHandler(h)
        try:
            logging.getLogger("late.child.logger").warning("token=%s", canary)
        finally:
            logging.getLogger("late.child.logger").removeHandler(h)
        assert seen == ["token=" + redact.REDACTED]
    finally:
        uninstall()


# -- canary against a real sshd ---------------------------------------
def test_canary_secret_never_appears_in_logs_exceptions_or_files(sshd, keytool, tmp_path,
                                                                 monkeypatch, caplog):
    canary = make_canary()
    monkeypatch.setenv("WFPH_TEST_KEY_PASSPHRASE", canary)
    # The user key is encrypted with the canary as passphrase.
    locked = keytool.keygen(tmp_path / "locked_key", passphrase=canary)
    (sshd.root / "authorized_keys").write_text(Path(str(locked) + ".pub").read_text())
    reg = SecretRegistry()
    uninstall = redact.install(reg)
    caplog.set_level(logging.DEBUG)   # paramiko's debug output included
    raised: list[BaseException] = []
    try:
        g = sshd.client(registry=reg, key_file=locked, passphrase_env="WFPH_TEST_KEY_PASSPHRASE")
        with g:
            ok = g.run(["printf", "%s\n", canary])             # secret in command and output
            assert ok.exit_code == 0
            assert ok.stdout == redact.REDACTED + "\n"         # it ran; output scrubbed on the fly
            err = g.run_script(f"echo {shlex.quote(canary)} >&2; exit 4")
            assert err.stderr == redact.REDACTED + "\n"
            with pytest.raises(CommandFailed) as failed:
                g.run(["sh", "-c", f"exit 9 # {canary}"], check=True)
            raised.append(failed.value)
            with pytest.raises(CommandHang) as hang:
                g.run_script(f"sleep 10 # {canary}", timeout=0.5)
            raised.append(hang.value)
            try:
                raise RuntimeError(f"harness failed near {canary}")
            except RuntimeError:
                log.exception("unexpected error with %r", canary)
        # A wrong passphrase is reported without echoing it.
        monkeypatch.setenv("WFPH_TEST_KEY_PASSPHRASE", canary + "-wrong")
        with pytest.raises(KeyLoadError) as bad:
            sshd.client(registry=reg, key_file=locked, passphrase_env="WFPH_TEST_KEY_PASSPHRASE").connect()
        assert isinstance(bad.value, InfrastructureError)
        raised.append(bad.value)
        junit = tmp_path / "junit.xml"
        junit.write_text(f'<testcase name="t"><failure message="{canary}">{canary}</failure></testcase>')
        scrub_file(junit, reg)
    finally:
        uninstall()

    forms = [canary, repr(canary)[1:-1], canary.replace("&", "&amp;")]
    texts = [caplog.text] + [r.getMessage() for r in caplog.records]
    texts += ["".join(traceback.format_exception(e)) for e in raised]
    texts += [p.read_text(errors="replace") for p in (sshd.root / "out").rglob("*") if p.is_file()]
    texts.append(junit.read_text())
    for text in texts:
        for form in forms:
            assert form not in text
    # The events were logged (redacted), not silently dropped.
    assert any("printf" in r.getMessage() and redact.REDACTED in r.getMessage() for r in caplog.records)
    assert any(r.exc_text and redact.REDACTED in r.exc_text for r in caplog.records)


def test_secrets_with_quotes_tabs_newlines_in_every_encoded_form(tmp_path):
    """Issue "Windows day one", security: a secret with quotes, a tab and a
    newline is found raw, JSON/XML/PowerShell-escaped, with CRLF, URL-encoded,
    base64 (UTF-8 and UTF-16LE, any alignment) and in UTF-16LE, in *.out/*.err too."""
    import base64
    import json as _json
    import urllib.parse
    from harness.vm.redact import SecretRegistry, scrub_tree
    reg = SecretRegistry()
    secret = "p\"a's\ts\nw0rd-Canary!"
    reg.add(secret)
    forms = [secret, _json.dumps(secret), secret.replace("'", "''"), secret.replace("\n", "\r\n"),
             urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)]
    for raw in (secret.encode(), secret.encode("utf-16-le")):
        for k in range(3):
            forms.append(base64.b64encode(b"Z" * k + raw + b"tail").decode())
            forms.append(base64.urlsafe_b64encode(b"Z" * k + raw).decode())
    for i, f in enumerate(forms):
        for ext, data in ((".out", f.encode()), (".err", f.encode("utf-16-le"))):
            p = tmp_path / f"cmd{i}{ext}"
            p.write_bytes(b"before " + data + b" after")
    scrub_tree(tmp_path, reg)
    for p in tmp_path.iterdir():
        data = p.read_bytes()
        assert not reg.contains_secret(data), p.name
        assert b"before" in data and (b"********" in data or "********".encode("utf-16-le") in data), p.name
