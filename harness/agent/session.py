"""`AgentSession`: one winsock-agent process and the framed conversation with it.

The session starts the agent (any argv: `wine64 agent.exe`, `ssh host agent.exe`,
a native path), waits for its HELLO, checks the protocol version and resolves
the functions of the contract. Requests may come from several Python threads:
each waits on its own slot while one reader thread reads every response frame
and hands it to the slot whose id it carries. Frames are capped at MAX_FRAME in
both directions, so a hostile or broken peer can cost at most that much memory;
an oversized or malformed frame, a response to no request, or a missing HELLO is
an AgentProtocolError. If the agent dies or does not answer within the call
timeout, every waiting request fails with an error naming its own call, the
agent's exit status and the tail of its stderr, and the session is dead: the
owner starts a new one. With env WFP_AGENT_FLIGHT_RECORD set to a file, each
request the agent's end took with it (it exited, or broke the protocol) is
also appended there as a JSON line (call, the pytest test running it, agent):
the lab reads it to name the call a guest went away under, whichever code
path (a test, a fixture's cleanup) then caught the error.
"""
from __future__ import annotations

import collections
import json
import os
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field

from harness.agent import protocol as P
from harness.agent.protocol import (AgentDied, AgentError, AgentProtocolError, AgentRequestError, AgentTimeout,
                                    AgentVersionError)

_ARGS = [struct.Struct(f"<QB{n}Q") for n in range(P.MAX_ARGS + 1)]
_MASK64 = (1 << 64) - 1
STDERR_LINES = 40
STDERR_LINE_MAX = 2000


@dataclass
class Hello:
    """What the agent said about itself."""
    version: int
    pid: int
    page_size: int
    granularity: int
    max_frame: int
    max_args: int
    elevated: bool
    build_id: str
    os: str
    extensions: dict[int, str] = field(default_factory=dict)     # pointer -> extension function name


class _Slot:
    """One outstanding request: the waiter blocks on `lock` until the reader (or a failure) releases it."""
    __slots__ = ("lock", "op", "what", "status", "body", "error")

    def __init__(self, op: int, what):
        self.lock = threading.Lock()
        self.lock.acquire()
        self.op = op
        self.what = what
        self.status = None
        self.body = b""
        self.error = None

    def describe(self) -> str:
        return self.what() if callable(self.what) else str(self.what)


class AgentSession:
    """A running agent. `call`, `new_thread`, `alloc`, ... are its requests."""

    def __init__(self, argv, *, env=None, label: str = "", startup_timeout: float = 60.0,
                 call_timeout: float = 30.0, cwd=None):
        self.argv = [str(a) for a in argv]
        self.label = label or " ".join(self.argv)
        self.call_timeout = call_timeout
        self._lock = threading.Lock()             # pending table, id counter, dead flag
        self._write_lock = threading.Lock()
        self._pending: dict[int, _Slot] = {}
        self._next_id = 1
        self._dead: AgentError | None = None
        self._stderr = collections.deque(maxlen=STDERR_LINES)
        self.started = time.monotonic()
        hello = _Slot(P.OP_HELLO, "waiting for the agent's HELLO")
        self._pending[0] = hello
        try:
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, env=env, cwd=cwd)
        except OSError as exc:
            raise AgentError(f"cannot start the agent {self.label!r}: {exc}") from exc
        self.pid = self._proc.pid
        self._stdin = self._proc.stdin
        self._reader = threading.Thread(target=self._read_loop, name=f"agent-reader-{self.pid}", daemon=True)
        self._stderr_reader = threading.Thread(target=self._stderr_loop, name=f"agent-stderr-{self.pid}",
                                               daemon=True)
        self._stderr_reader.start()
        self._reader.start()
        self.hello = self._handshake(hello, startup_timeout)
        self.functions: dict[str, int] = {}

    # -- lifecycle --------------------------------------------------------------------
    def _handshake(self, slot: _Slot, timeout: float) -> Hello:
        body = self._wait(slot, timeout)
        try:
            magic, version, pid, page, gran, max_frame, max_args, elevated = P.HELLO_FIXED.unpack_from(body, 0)
            if magic != P.HELLO_MAGIC:
                raise AgentProtocolError(f"the first frame from {self.label!r} is not a winsock-agent HELLO "
                                         f"(starts {body[:16]!r})")
            if version != P.PROTOCOL_VERSION:
                older = version < P.PROTOCOL_VERSION
                raise AgentVersionError(
                    f"the agent {self.label!r} speaks protocol version {version}, "
                    + (f"older than this harness's {P.PROTOCOL_VERSION}: rebuild it from "
                       f"driver-fixtures/winsock-agent (and copy it to the remote host)" if older else
                       f"newer than this harness's {P.PROTOCOL_VERSION}: update the harness"))
            pos = P.HELLO_FIXED.size
            build_id, pos = P.str8(body, pos)
            os_name, pos = P.str8(body, pos)
            (count,), pos = struct.unpack_from("<I", body, pos), pos + 4
            extensions = {}
            for _ in range(count):
                (ptr,), pos = struct.unpack_from("<Q", body, pos), pos + 8
                name, pos = P.str8(body, pos)
                if ptr:
                    extensions[ptr] = name
        except AgentError as exc:
            self._break(exc)
            raise
        except (struct.error, IndexError) as exc:
            err = AgentProtocolError(f"malformed HELLO from {self.label!r}: {exc}")
            self._break(err)
            raise err from None
        return Hello(version, pid, page, gran, max_frame, max_args, bool(elevated), build_id, os_name, extensions)

    @property
    def alive(self) -> bool:
        return self._dead is None and self._proc.poll() is None

    @property
    def busy(self) -> bool:
        """Requests are outstanding (a Python thread is blocked in a call)."""
        return bool(self._pending)

    def close(self, timeout: float = 2.0) -> None:
        """Ask the agent to exit; kill it if it does not."""
        if self._dead is None:
            try:
                self.request(P.OP_EXIT, 0, b"", "EXIT", timeout=timeout)
            except AgentError:
                pass
        self._break(AgentDied(f"the agent {self.label!r} was closed"), kill_after=timeout)

    def kill(self, reason: str = "killed by the harness") -> None:
        self._break(AgentDied(f"the agent {self.label!r} (pid {self.pid}) was {reason}"))

    def stderr_tail(self) -> str:
        return "".join(line.decode("utf-8", "replace") for line in self._stderr).rstrip()

    # -- transport ----------------------------------------------------------------------
    def request(self, op: int, tag: int, body: bytes, what, timeout: float | None = None) -> bytes:
        """Send one request, wait for its response, return its body (ST_OK) or raise."""
        slot = _Slot(op, what)
        with self._lock:
            if self._dead is not None:
                raise self._dead_error(slot)
            rid = self._next_id
            self._next_id = rid + 1 if rid < 0xFFFFFFFF else 1
            self._pending[rid] = slot
        frame = P.HEADER.pack(P.REQUEST_HEADER + len(body), rid, tag, op, 0) + body
        if len(frame) - 4 > P.MAX_FRAME:
            with self._lock:
                self._pending.pop(rid, None)
            raise ValueError(f"{slot.describe()}: request of {len(frame) - 4} bytes exceeds the frame limit")
        with self._write_lock:
            try:
                self._stdin.write(frame)
                self._stdin.flush()
            except (OSError, ValueError):
                self._break(None)
        return self._wait(slot, self.call_timeout if timeout is None else timeout)

    def _wait(self, slot: _Slot, timeout: float) -> bytes:
        if not slot.lock.acquire(timeout=timeout if timeout and timeout > 0 else -1):
            self._break(AgentTimeout(f"no answer from the agent {self.label!r} (pid {self.pid}) within "
                                     f"{timeout:g} s; it was killed"))
        if slot.error is not None:
            raise slot.error
        if slot.status != P.ST_OK:
            raise AgentRequestError(f"{slot.describe()}: the agent refused: "
                                    f"{slot.body.decode('utf-8', 'replace')}")
        return slot.body

    def _read_loop(self) -> None:
        read = self._proc.stdout.read
        header = struct.Struct("<IIHH")
        failure: AgentError | None = None
        try:
            while True:
                raw = read(4)
                if len(raw) < 4:
                    if raw:
                        failure = AgentProtocolError("the agent's output ended inside a frame length")
                    break
                (n,) = struct.unpack("<I", raw)
                if n > P.MAX_FRAME:
                    failure = AgentProtocolError(f"the agent sent a frame of {n} bytes; the limit is "
                                                 f"{P.MAX_FRAME}")
                    break
                if n < P.RESPONSE_HEADER:
                    failure = AgentProtocolError(f"the agent sent a frame of {n} bytes, shorter than a "
                                                 f"response header")
                    break
                payload = read(n)
                if len(payload) < n:
                    failure = AgentProtocolError(f"the agent's output ended inside a frame ({len(payload)} of "
                                                 f"{n} bytes)") if payload else None
                    break
                rid, tag, op, status = header.unpack_from(payload, 0)
                slot = self._pending.pop(rid, None)
                if slot is None or slot.op != op:
                    failure = AgentProtocolError(
                        f"the agent answered request {rid} (op {P.OP_NAMES.get(op, op)}), which "
                        + ("is not outstanding" if slot is None else
                           f"was a {P.OP_NAMES.get(slot.op, slot.op)} request"))
                    break
                slot.status = status
                slot.body = payload[P.RESPONSE_HEADER:]
                slot.lock.release()
        except (OSError, ValueError):
            failure = None
        self._record_flight(failure)
        self._break(failure)

    def _record_flight(self, failure: AgentError | None) -> None:
        """The requests the agent's end is taking with it, to WFP_AGENT_FLIGHT_RECORD (see above)."""
        path = os.environ.get("WFP_AGENT_FLIGHT_RECORD")
        with self._lock:
            pending = [] if self._dead is not None else list(self._pending.values())
        if not path or not pending:
            return
        test = os.environ.get("PYTEST_CURRENT_TEST", "")
        lines = "".join(json.dumps({"call": slot.describe(), "test": test, "agent": self.label, "pid": self.pid,
                                    "why": str(failure) if failure else "the agent's output ended"}) + "\n"
                        for slot in pending)
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(lines)
        except OSError:
            pass                # a record is evidence for a report, never a reason to fail the call

    def _stderr_loop(self) -> None:
        # Chunks, not readline(): a peer writing one endless line must not grow our memory.
        fd = self._proc.stderr.fileno()
        partial = b""
        try:
            while True:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()[-STDERR_LINE_MAX:]
                self._stderr.extend(line[:STDERR_LINE_MAX] + b"\n" for line in lines[-STDERR_LINES:])
        except (OSError, ValueError):
            pass
        if partial:
            self._stderr.append(partial)

    def _break(self, failure: AgentError | None, kill_after: float = 0.0) -> None:
        """Mark the session dead (once), end the process, fail every outstanding request."""
        with self._lock:
            first = self._dead is None
            if first:
                self._dead = failure or AgentDied(f"the agent {self.label!r} (pid {self.pid}) exited")
            pending, self._pending = self._pending, {}
        if not first:
            for slot in pending.values():
                slot.error = self._dead_error(slot)
                slot.lock.release()
            return
        proc = self._proc
        try:
            self._stdin.close()
        except (OSError, ValueError):
            pass
        if kill_after:
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None and (failure is not None or kill_after):
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        if threading.current_thread() is not self._stderr_reader:
            self._stderr_reader.join(timeout=1)
        for slot in pending.values():
            slot.error = self._dead_error(slot)
            slot.lock.release()

    def _dead_error(self, slot: _Slot) -> AgentError:
        reason = self._dead
        code = self._proc.poll()
        status = "still running" if code is None else f"exit code {code}" if code >= 0 else f"signal {-code}"
        tail = self.stderr_tail()
        text = (f"{slot.describe()}: {reason} [agent {self.label!r}, pid {self.pid}, {status}]"
                + (f"\n--- agent stderr (tail) ---\n{tail}" if tail else "\n(agent stderr empty)"))
        return type(reason)(text)

    # -- requests -----------------------------------------------------------------------
    def resolve(self, names: dict[str, str]) -> dict[str, int]:
        """{function: dll} -> {function: address or 0}; the agent may then call those addresses."""
        items = list(names.items())
        body = struct.pack("<I", len(items)) + b"".join(P.pack_str8(dll) + P.pack_str8(name) for name, dll in items)
        out = self.request(P.OP_RESOLVE, 0, body, f"RESOLVE {len(items)} functions")
        if len(out) != 8 * len(items):
            raise self._protocol(f"RESOLVE answered {len(out)} bytes for {len(items)} names")
        return {name: ptr for (name, _), ptr in zip(items, struct.unpack(f"<{len(items)}Q", out))}

    def call(self, tag: int, fnptr: int, args: tuple, what, timeout: float | None = None):
        """(rax, last_error, exception, completions, learned) of one call on worker `tag`.

        exception is None or (code, address, info0, info1); completions is a list of
        (routine, dwError, cbTransferred, lpOverlapped, dwFlags); learned is None or
        (pointer, extension name) when the call wrote an extension function pointer.
        """
        body = _ARGS[len(args)].pack(fnptr, len(args), *[a & _MASK64 for a in args])
        out = self.request(P.OP_CALL, tag, body, what, timeout)
        try:
            rax, last_error, code, address, info0, info1, n_done, lost = P.CALL_RESULT.unpack_from(out, 0)
            pos = P.CALL_RESULT.size
            completions = []
            for _ in range(n_done):
                routine, err, count, ovl, flags, _pad = P.COMPLETION.unpack_from(out, pos)
                completions.append((routine, err, count, ovl, flags))
                pos += P.COMPLETION.size
            (learned_ptr,) = P.U64.unpack_from(out, pos)
            learned_name, pos = P.str8(out, pos + 8)
        except (struct.error, IndexError) as exc:
            raise self._protocol(f"malformed CALL response ({len(out)} bytes): {exc}") from None
        if pos != len(out):
            raise self._protocol(f"CALL response has {len(out) - pos} stray bytes")
        if lost:
            raise AgentError(f"{what() if callable(what) else what}: {lost} completion routines ran beyond the "
                             f"agent's per-call record limit and were not delivered")
        return (rax, last_error, (code, address, info0, info1) if code else None, completions,
                (learned_ptr, learned_name) if learned_ptr else None)

    def new_thread(self) -> tuple[int, int, int]:
        out = self.request(P.OP_NEW_THREAD, 0, b"", "NEW_THREAD")
        if len(out) != P.NEW_THREAD_RESULT.size:
            raise self._protocol(f"NEW_THREAD answered {len(out)} bytes")
        return P.NEW_THREAD_RESULT.unpack(out)

    def end_thread(self, tag: int) -> None:
        self.request(P.OP_END_THREAD, 0, struct.pack("<I", tag), f"END_THREAD {tag}")

    def routine(self) -> int:
        return self._u64(self.request(P.OP_ROUTINE, 0, b"", "ROUTINE"), "ROUTINE")

    def alloc(self, size: int, prot: str) -> int:
        return self._u64(self.request(P.OP_ALLOC, 0, struct.pack("<QB", size, P.PROT[prot]),
                                      f"memory.alloc({size}, {prot!r})"), "ALLOC")

    def free(self, start: int) -> None:
        self.request(P.OP_FREE, 0, P.U64.pack(start), f"memory.free({start:#x})")

    def protect(self, start: int, prot: str) -> None:
        self.request(P.OP_PROTECT, 0, struct.pack("<QB", start, P.PROT[prot]), f"memory.protect({start:#x}, {prot!r})")

    def read(self, ptr: int, n: int) -> bytes:
        out = self.request(P.OP_READ, 0, struct.pack("<QI", ptr, n), f"memory.read({ptr:#x}, {n})")
        if len(out) != n:
            raise self._protocol(f"READ of {n} bytes answered {len(out)}")
        return out

    def write(self, ptr: int, data: bytes) -> None:
        self.request(P.OP_WRITE, 0, P.U64.pack(ptr) + data, f"memory.write({ptr:#x}, {len(data)} bytes)")

    def invalid_pointer(self) -> int:
        return self._u64(self.request(P.OP_INVALID, 0, b"", "memory.invalid_pointer()"), "INVALID")

    def retire(self, starts) -> int:
        starts = list(starts)
        body = struct.pack(f"<I{len(starts)}Q", len(starts), *starts)
        return self._u64(self.request(P.OP_RETIRE, 0, body, f"RETIRE {len(starts)} allocations"), "RETIRE")

    def ping(self, timeout: float | None = None) -> None:
        self.request(P.OP_PING, 0, b"", "PING", timeout=timeout)

    def _u64(self, out: bytes, what: str) -> int:
        if len(out) != 8:
            raise self._protocol(f"{what} answered {len(out)} bytes, not 8")
        return P.U64.unpack(out)[0]

    def _protocol(self, message: str) -> AgentProtocolError:
        err = AgentProtocolError(f"{message} [agent {self.label!r}, pid {self.pid}]")
        self._break(err)
        return err


__all__ = ["AgentSession", "Hello"]
