"""Redirect records: what the kernel keeps per flow, and its opaque "SIO format" blob.

docs/decisions.md §5: the blob carries the ordered list of redirections of the
flow (redirect handle, provider, filter, target PID) and an integrity tag,
so a tampered or foreign blob is refused. The tag is a keyed BLAKE2s MAC
(RFC 7693's keyed mode) under a secret of the host's kernel: a blob is
only meaningful on the host that issued it, like the kernel handle it
stands for (docs/facts.md §5.6). Callers must treat it as opaque; the format here
is the simulator's own.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import struct
import uuid
from dataclasses import dataclass

MAGIC = b"WFPR"
VERSION = 1
_HEADER = struct.Struct("<4sHHQ")          # magic, version, count, flow id
_ENTRY = struct.Struct("<Q16sQI4x")        # redirect handle, provider GUID, filter id, target PID
TAG_SIZE = 16


@dataclass(frozen=True, slots=True)
class RedirectEntry:
    redirect_handle: int
    provider: uuid.UUID
    filter_id: int
    target_pid: int


# A host has a few providers, and every blob names them: build each GUID's UUID (and its bytes) once.
_provider = functools.lru_cache(maxsize=256)(lambda raw: uuid.UUID(bytes_le=raw))
_provider_bytes = functools.lru_cache(maxsize=256)(lambda provider: provider.bytes_le)


def _tag(key: bytes, body: bytes) -> bytes:
    # Keyed BLAKE2s is a MAC in one C call, about a third of the cost of HMAC-SHA256 (no OpenSSL set-up).
    return hashlib.blake2s(body, key=key, digest_size=TAG_SIZE).digest()


def encode(flow_id: int, entries, key: bytes) -> bytes:
    body = _HEADER.pack(MAGIC, VERSION, len(entries), flow_id)
    body += b"".join([_ENTRY.pack(e.redirect_handle, _provider_bytes(e.provider), e.filter_id, e.target_pid)
                      for e in entries])
    return body + _tag(key, body)


def decode(blob: bytes, key: bytes):
    """(flow id, [RedirectEntry]) for a genuine blob of this host, else None."""
    if len(blob) < _HEADER.size + TAG_SIZE:
        return None
    body, tag = blob[:-TAG_SIZE], blob[-TAG_SIZE:]
    if not hmac.compare_digest(_tag(key, body), tag):
        return None
    magic, version, count, flow_id = _HEADER.unpack_from(body)
    if magic != MAGIC or version != VERSION or len(body) != _HEADER.size + count * _ENTRY.size:
        return None
    entries = []
    for i in range(count):
        handle, provider, filter_id, pid = _ENTRY.unpack_from(body, _HEADER.size + i * _ENTRY.size)
        entries.append(RedirectEntry(handle, _provider(provider), filter_id, pid))
    return flow_id, entries
