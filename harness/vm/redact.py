"""Secret redaction for logs, exceptions, captured output and report files.

A :class:`SecretRegistry` holds the secret values of a run (passwords read
from environment variables named in the config, key passphrases, private key
material).  Everything the orchestrator writes passes through it:

* :class:`RedactingFilter` is a ``logging.Filter`` that rewrites message,
  arguments, exception text and stack text of every record;
  :func:`install` applies it to *every* record created in the process (also
  records that reach handlers added later, such as pytest's capture handler);
* :meth:`SecretRegistry.redact` scrubs strings (exception messages);
* :class:`StreamRedactor` scrubs byte streams written incrementally
  (remote command output captured to files);
* :func:`scrub_file` / :func:`write_scrubbed` scrub text files (JUnit XML,
  reports) before they leave the harness.

A secret is also looked for in the escaped forms it takes in those outputs:
``repr()``/JSON escaping, XML escaping, PowerShell single-quote doubling,
CRLF line ends, URL encoding, base64 (of its UTF-8 and UTF-16LE bytes, at
any alignment inside a longer blob) and, for all of them, UTF-16LE (Windows
tools write logs in it).
"""

from __future__ import annotations

import base64
import html
import json
import urllib.parse
import logging
import os
import re
import shlex
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable

__all__ = [
    "REDACTED",
    "SecretRegistry",
    "RedactingFilter",
    "StreamRedactor",
    "default_registry",
    "install",
    "scrub_file",
    "write_scrubbed",
]

REDACTED = "********"

# Shortest secret we accept; a 1-2 character "secret" would shred every log.
MIN_SECRET_LENGTH = 3


def _variants(secret: str) -> set[str]:
    """The forms a secret takes once escaped by the writers we feed.

    Callers should still redact *before* quoting where they can (the
    quoted form of a secret next to other text may escape these patterns).
    """
    forms = {secret}
    forms.add(repr(secret)[1:-1])                 # %r in log args, tracebacks
    forms.add(json.dumps(secret)[1:-1])           # JSON reports
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    forms.add(html.escape(secret, quote=True))    # XML / HTML (JUnit)
    forms.add(html.escape(secret, quote=False))
    forms.add(secret.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
              .replace('"', "&quot;").replace("'", "&apos;"))
    quoted = shlex.quote(secret)                  # POSIX command lines (shlex.join)
    forms.add(quoted)
    if quoted.startswith("'") and quoted.endswith("'"):
        forms.add(quoted[1:-1])
    ps = secret
    for q in "'\u2018\u2019\u201a\u201b":         # PowerShell single-quoted literal
        ps = ps.replace(q, q + q)
    forms.add(ps)
    forms.add(secret.replace("\n", "\r\n"))       # a Windows program's line ends
    forms.add(urllib.parse.quote(secret, safe=""))  # URLs, query strings
    forms.add(urllib.parse.quote(secret))
    forms.add(urllib.parse.quote_plus(secret))
    forms |= _base64_forms(secret)
    return {f for f in forms if f}


def _base64_forms(secret: str) -> set[str]:
    """The base64 characters that only the secret's bytes determine, for the
    three alignments it can have inside a longer blob (standard and URL-safe
    alphabets), of its UTF-8 and UTF-16LE encodings."""
    out: set[str] = set()
    for enc in ("utf-8", "utf-16-le"):
        try:
            raw = secret.encode(enc, "surrogateescape" if enc == "utf-8" else "strict")
        except UnicodeEncodeError:
            continue
        for k in range(3):
            b64 = base64.b64encode(b"\0" * k + raw).decode("ascii")
            core = b64[-(-4 * k // 3):(8 * (k + len(raw))) // 6]
            if len(core) >= 8:  # shorter cores would match innocent base64
                out.add(core)
                out.add(core.replace("+", "-").replace("/", "_"))
    return out


class SecretRegistry:
    """Thread-safe set of secret values to remove from every output."""

    def __init__(self, placeholder: str = REDACTED) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._placeholder = placeholder
        self._pattern: re.Pattern[str] | None = None
        self._bytes_pattern: re.Pattern[bytes] | None = None
        self._max_len = 0

    # -- registration ---------------------------------------------------
    def add(self, value: str | bytes | None) -> None:
        """Register a secret value (and its escaped forms).

        Empty values are ignored; very short values are refused because
        redacting them would destroy every log line while hiding nothing.
        """
        if value is None:
            return
        if isinstance(value, bytes):
            value = value.decode("utf-8", "surrogateescape")
        if value == "":
            return
        if len(value) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"secret too short to redact safely (< {MIN_SECRET_LENGTH} characters)")
        with self._lock:
            new = _variants(value)
            # Multi-line secrets (PEM keys): redact each substantial line too,
            # so a partial dump of the material is still hidden.
            for line in value.splitlines():
                line = line.strip()
                if len(line) >= 16 and not line.startswith("-----"):
                    new |= _variants(line)
            if new <= self._secrets:
                return
            self._secrets |= new
            self._rebuild()

    def add_env(self, name: str, environ: "os._Environ[str] | dict[str, str] | None" = None) -> str | None:
        """Register the value of environment variable ``name``; return it."""
        env = os.environ if environ is None else environ
        value = env.get(name)
        if value:
            self.add(value)
        return value

    def add_file(self, path: str | os.PathLike[str]) -> None:
        """Register the content of a secret file (e.g. private key material)."""
        self.add(Path(path).read_text(encoding="utf-8", errors="surrogateescape").strip())

    def clear(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._rebuild()

    def __len__(self) -> int:
        return len(self._secrets)

    def __bool__(self) -> bool:  # an empty registry is still a registry
        return True

    def _rebuild(self) -> None:
        if not self._secrets:
            self._pattern = None
            self._bytes_pattern = None
            self._max_len = 0
            return
        # Longest first so a secret containing another is removed whole.
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered))
        encoded: set[bytes] = set()
        for s in ordered:
            encoded.add(s.encode("utf-8", "surrogateescape"))
            try:
                encoded.add(s.encode("utf-16-le"))
            except UnicodeEncodeError:
                pass
        ordered_b = sorted(encoded, key=len, reverse=True)
        self._bytes_pattern = re.compile(b"|".join(re.escape(b) for b in ordered_b))
        self._max_len = max(len(b) for b in ordered_b)

    # -- scrubbing ------------------------------------------------------
    def redact(self, text: object) -> str:
        """``str(text)`` with every registered secret replaced."""
        s = text if isinstance(text, str) else str(text)
        pattern = self._pattern
        if pattern is None:
            return s
        return pattern.sub(self._placeholder, s)

    def redact_bytes(self, data: bytes) -> bytes:
        pattern = self._bytes_pattern
        if pattern is None:
            return data
        return pattern.sub(self._placeholder.encode("ascii"), data)

    def contains_secret(self, text: str | bytes) -> bool:
        if isinstance(text, bytes):
            p = self._bytes_pattern
        else:
            p = self._pattern
        return bool(p is not None and p.search(text))

    @property
    def max_secret_bytes(self) -> int:
        return self._max_len


class StreamRedactor:
    """Redacts a byte stream fed in arbitrary chunks.

    It holds back the last ``max_secret_bytes - 1`` bytes so that a secret
    split across two chunks is still caught; :meth:`flush` releases the rest.
    """

    def __init__(self, registry: SecretRegistry) -> None:
        self._registry = registry
        self._buf = b""

    def feed(self, data: bytes) -> bytes:
        self._buf = self._registry.redact_bytes(self._buf + data)
        keep = max(self._registry.max_secret_bytes - 1, 0)
        if keep == 0:
            out, self._buf = self._buf, b""
        elif len(self._buf) > keep:
            out, self._buf = self._buf[:-keep], self._buf[-keep:]
        else:
            out = b""
        return out

    def flush(self) -> bytes:
        out, self._buf = self._registry.redact_bytes(self._buf), b""
        return out


class RedactingFilter(logging.Filter):
    """Rewrites a record so no registered secret survives in it.

    The message is rendered (``msg % args``) and redacted, exception and stack
    text are formatted and redacted, and string attributes passed through
    ``extra=`` are redacted.  The record is never dropped.
    """

    _formatter = logging.Formatter()
    _standard = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def __init__(self, registry: SecretRegistry | None = None, name: str = "") -> None:
        super().__init__(name)
        self.registry = registry if registry is not None else default_registry

    def filter(self, record: logging.LogRecord) -> bool:
        reg = self.registry
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not leak the args
            message = f"{record.msg!r} (unformattable log arguments)"
        record.msg = reg.redact(message)
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self._formatter.formatException(record.exc_info)
            # Drop the live exception: a later formatter would render it raw.
            record.exc_info = None
        if record.exc_text:
            record.exc_text = reg.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = reg.redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in self._standard and isinstance(value, str):
                record.__dict__[key] = reg.redact(value)
        return True


default_registry = SecretRegistry()

_install_lock = threading.Lock()
_installed: dict[int, Callable[[], None]] = {}


def install(registry: SecretRegistry | None = None) -> Callable[[], None]:
    """Redact every log record created in this process from now on.

    Filters on loggers only see records logged *at* that logger, and filters
    on handlers miss handlers added later, so the filter runs inside the
    record factory instead.  Returns a function that undoes the installation.
    Installing the same registry twice is a no-op.
    """
    reg = registry if registry is not None else default_registry
    with _install_lock:
        if id(reg) in _installed:
            return _installed[id(reg)]
        previous = logging.getLogRecordFactory()
        flt = RedactingFilter(reg)

        def factory(*args, **kwargs):
            record = previous(*args, **kwargs)
            flt.filter(record)
            return record

        def uninstall() -> None:
            with _install_lock:
                if logging.getLogRecordFactory() is factory:
                    logging.setLogRecordFactory(previous)
                _installed.pop(id(reg), None)

        logging.setLogRecordFactory(factory)
        _installed[id(reg)] = uninstall
        return uninstall


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_scrubbed(path: str | os.PathLike[str], content: str | bytes,
                   registry: SecretRegistry | None = None, encoding: str = "utf-8") -> Path:
    """Write a report file with secrets removed; the raw text never hits disk."""
    reg = registry if registry is not None else default_registry
    p = Path(path)
    data = content.encode(encoding) if isinstance(content, str) else content
    _atomic_write_bytes(p, reg.redact_bytes(data))
    return p


def scrub_file(path: str | os.PathLike[str], registry: SecretRegistry | None = None) -> bool:
    """Scrub an existing file in place (e.g. JUnit XML written by pytest).

    Works on bytes, so any encoding is safe (UTF-8 and UTF-16LE forms of the
    secrets are both removed).  Returns True when something was replaced.
    """
    reg = registry if registry is not None else default_registry
    p = Path(path)
    data = p.read_bytes()
    clean = reg.redact_bytes(data)
    if clean == data:
        return False
    _atomic_write_bytes(p, clean)
    return True


def scrub_tree(root: str | os.PathLike[str], registry: SecretRegistry | None = None,
               patterns: Iterable[str] = ("*.xml", "*.json", "*.txt", "*.log", "*.html", "*.md", "*.out",
                                          "*.err")) -> list[Path]:
    """Scrub every matching file under ``root``; return the files changed."""
    changed: list[Path] = []
    base = Path(root)
    for pat in patterns:
        for f in sorted(base.rglob(pat)):
            if f.is_file() and scrub_file(f, registry):
                changed.append(f)
    return changed
