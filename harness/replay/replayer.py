"""`replay(trace, target)`: re-execute a trace on another target and diff every step.

Per call it compares the return value, the last error (by default only where
either side's return value signals failure: Win32 leaves the last error
undefined after a success), the bytes the call wrote into the test's memory
(8-byte words; pointers and handles compared as symbols), and the completion
routine invocations (routine, dwError, cbTransferred, lpOverlapped, dwFlags).
What the two sides cannot agree on by their nature is compared as the program could rely on it:
ports the system chose (harness.replay.ports), address buffers up to the returned length
(names, msgname), what pending operations write (settle, asyncwrites), polling loops where they end
(polls).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.winsock import constants as C

from .recorder import EXT_SIGNATURES, SIGNATURES, VOLATILE_RETURNS, MemoryTracker, encode_ret, learn_extension
from harness.wording import plain, plural

from . import msgname, names, params as arguments, polls
from .uncompared import uncompared_ranges
from .asyncwrites import AsyncWrites, overlapped_pending, target_pending
from .hostvalues import HostValues
from .ports import TracePorts, translate
from .settle import wait_for_completions
from .symbols import FreshSymbols, UnresolvedSymbol, retire_closed, symbol_text
from .trace import Trace

LAST_ERROR_POLICIES = ("failure", "always", "never")
_READS_LAST_ERROR = frozenset({"WSAGetLastError", "GetLastError"})
_SETS_LAST_ERROR = frozenset({"WSASetLastError", "SetLastError"})
_PENDING_ERRORS = frozenset({C.WSA_IO_PENDING})     # ERROR_IO_PENDING, the same 997
_NO_LAST_ERROR = frozenset({"WSAStartup", "WSAGetLastError", "WSASetLastError", "GetLastError",
                            "GetCurrentProcessId", "GetCurrentThreadId", "SleepEx"})


def signals_failure(fn: str, ret_type: str, ret) -> bool:
    """Whether a return value is the function's failure value (the last error is then meaningful)."""
    if fn in _NO_LAST_ERROR or type(ret) is not int:
        return False
    if ret_type == "int":
        return ret == C.SOCKET_ERROR
    if ret_type == "SOCKET":
        return ret == C.INVALID_SOCKET
    if ret_type in ("BOOL", "HANDLE", "WSAEVENT"):
        return ret == 0
    if fn == "WSAWaitForMultipleEvents":
        return ret == C.WSA_WAIT_FAILED
    return False


def _fmt(value) -> str:
    """A recorded or replayed value as plain text: symbols by name, numbers with their hex, text bare."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        return symbol_text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value} (0x{value & 0xFFFFFFFFFFFFFFFF:x})" if abs(value) > 9 else str(value)
    if isinstance(value, dict) and "op" in value:          # a step the target could not run
        return _fmt_step(value)
    return plain(value)


def _fmt_step(step: dict) -> str:
    if step.get("op") == "call":
        return f"{step['fn']}({', '.join(_fmt(a) for a in step.get('args', []))})"
    return step.get("op", "step")


def _fmt_error(code) -> str:
    if type(code) is not int:
        return plain(code)
    if code == 0:
        return "0"               # no error (not WSA_INVALID_EVENT, which shares the value)
    signed = code - (1 << 32) if code & 0x80000000 else code
    name = C.error_name(signed)
    return f"{code} ({name})" if name != str(signed) else str(code)


@dataclass
class Divergence:
    step: int              # index in trace.steps (0-based); the file line is step + 2
    path: str              # "" for a top-level step, else "completions[0].calls[1]"
    fn: str
    field: str             # ret | error | writes | completions | raised | unresolved | step
    recorded: object
    replayed: object
    session: str = ""
    args: dict = field(default_factory=dict)     # the call's arguments by parameter name, as recorded
    params: dict = field(default_factory=dict)   # writes: word -> the argument it belongs to (params.py)

    @property
    def line(self) -> int:
        return self.step + 2

    def describe(self) -> str:
        where = f"step {self.step} (line {self.line})" + (f" {self.path}" if self.path else "")
        if self.field == "error":
            rec, rep = _fmt_error(self.recorded), _fmt_error(self.replayed)
        elif self.field == "writes":
            rec = ", ".join(f"{self._word(k)}={v}" for k, v in self.recorded.items()) or "nothing"
            rep = ", ".join(f"{self._word(k)}={v}" for k, v in self.replayed.items()) or "nothing"
        elif self.field == "completions":
            rec = "; ".join(_fmt_completion(c) for c in self.recorded) or "none"
            rep = "; ".join(_fmt_completion(c) for c in self.replayed) or "none"
        else:
            rec, rep = _fmt(self.recorded), _fmt(self.replayed)
        return f"{where} {self.fn}: {self.field}: recorded {rec}, replayed {rep}"

    def _word(self, key: str) -> str:
        """A written word, with the argument it belongs to where one does: alloc7+32 (ConnectEx lpdwBytesSent)."""
        owner = self.params.get(key)
        if owner is None:
            return key
        return f"{key} ({owner['fn']} {owner['param']}{'.' + owner['field'] if owner['field'] else ''})"

    def to_dict(self) -> dict:
        return {"step": self.step, "line": self.line, "path": self.path, "fn": self.fn, "field": self.field,
                "recorded": self.recorded, "replayed": self.replayed, "session": self.session,
                "args": self.args, "params": self.params}


def _fmt_completion(c) -> str:
    return f"{_fmt(c[0])}({', '.join(_fmt(a) for a in c[1])})"


@dataclass
class ReplayResult:
    trace: Trace
    divergences: list = field(default_factory=list)
    calls: int = 0
    steps: list = field(default_factory=list)      # the replayed steps, in the trace's own format
    symbols: list = field(default_factory=list)    # per session: the target's values for each symbol
    skipped: list = field(default_factory=list)    # sessions not replayed (sim_only: world controls not in
                                                   # the trace; threads, on a target in real time)
    polls: list = field(default_factory=list)      # polling loops that ended at another try (harness.replay.polls)

    @property
    def identical(self) -> bool:
        return not self.divergences

    @property
    def first(self):
        return self.divergences[0] if self.divergences else None

    def format(self, limit: int = 50) -> str:
        skipped = (f" ({plural(len(self.skipped), 'session')} not replayed: simulator-only, or simulated threads)"
                   if self.skipped else "")
        if self.polls:
            skipped += f" ({plural(len(self.polls), 'polling loop')} ended at another try than recorded: timing)"
        if self.identical:
            return f"identical: {plural(self.calls, 'call')} replayed, no divergence{skipped}"
        lines = [f"diverged: {plural(len(self.divergences), 'divergence')} in {plural(self.calls, 'call')} replayed"
                 + skipped,
                 f"first: {self.first.describe()}"]
        shown = self.divergences[:limit]
        lines += [f"  {d.describe()}" for d in shown]
        if len(self.divergences) > limit:
            lines.append(f"  ... {len(self.divergences) - limit} more")
        return "\n".join(lines)


def _tokens(runs) -> dict:
    """Write runs -> {"alloc{i}+{offset}": hex or symbol} per 8-byte word."""
    out = {}
    for run in runs:
        data = bytes.fromhex(run["hex"])
        syms = {off: sym for off, sym in run.get("syms", [])}
        base = run["offset"]
        for off in range(0, len(data), 8):
            key = f"alloc{run['alloc']}+{base + off}"
            out[key] = _fmt(syms[off]) if off in syms else data[off:off + 8].hex()
    return out


class _Session:
    def __init__(self, api, name, recorded_completions):
        self.api = api
        self.name = name
        self.symbols = FreshSymbols()      # the target may hand a closed handle's value out again
        self.tracker = MemoryTracker(api.memory, self.symbols)
        self.frames: list[dict] = []
        self.recorded_completions = recorded_completions     # routine k -> [recorded completion, ...]
        self.invocations: dict[int, int] = {}
        self.recorded_ports, self.ports = TracePorts(), TracePorts()     # ports the system chose, per side
        self.recorded_hosts, self.hosts = HostValues(), HostValues()     # addresses, option defaults: the host's
        self.threads: list = []
        self.thread_contexts: list = []
        self.recorded_memory: dict[int, bytearray] = {}   # alloc index -> its bytes as the recording left them
        self.recorded_syms: dict[int, dict] = {}          # alloc index -> {offset: symbol} in those bytes
        self.outstanding: list = []     # (alloc index, offset) of OVERLAPPEDs handed to calls, not yet settled
        self.async_writes = AsyncWrites()
        self.issued: list = []          # regions (params.py) of the calls that started pending operations, newest first
        self.error_defined = True       # whether the thread's last error is one a call set (see _compare)

    def note_recorded(self, alloc, offset: int, hex_: str, syms=()) -> None:
        mem = self.recorded_memory.get(alloc)
        if mem is not None:
            data = bytes.fromhex(hex_)
            mem[offset:offset + len(data)] = data[:max(0, len(mem) - offset)]
            table = self.recorded_syms.setdefault(alloc, {})
            for off in [o for o in table if offset <= o < offset + len(data)]:
                del table[off]
            table.update((offset + off, sym) for off, sym in syms)


def _has_threads(steps, start: int) -> bool:
    """Whether the session starting at `start` runs calls on a simulated thread of its own."""
    for step in steps[start:]:
        if step["op"] == "session":
            return False
        if step["op"] == "thread":
            return True
    return False


def _completions_by_routine(steps, start: int) -> dict:
    """routine index -> recorded completion records, in the order they happened, for one session."""
    out: dict[int, list] = {}

    def walk(items):
        for step in items:
            if step.get("op") == "session":
                return False
            for comp in step.get("completions", []):
                routine = comp["routine"]
                if isinstance(routine, list) and routine[0] == "routine":
                    out.setdefault(routine[1], []).append(comp)
                walk(comp.get("calls", []))
        return True

    walk(steps[start:])
    return out


class Replayer:
    def __init__(self, trace: Trace, target, last_error: str = "failure"):
        if last_error not in LAST_ERROR_POLICIES:
            raise ValueError(f"last_error must be one of {LAST_ERROR_POLICIES}")
        self.trace = trace
        self.target = target
        self.last_error = last_error
        self.result = ReplayResult(trace)
        self.session: _Session | None = None
        self._owned = []
        self._where = (0, "")
        self._loops = polls.find_loops(trace.steps)
        self._resume = -1       # a polling loop the target ended early: its recorded tries up to here are left out

    # -- sessions ------------------------------------------------------------------
    def _new_api(self, first: bool):
        target = self.target
        if callable(target) and not hasattr(target, "WSAIoctl"):
            api = target()
            self._owned.append(api)
            return api
        if not first:
            raise ValueError("this trace has several sessions: replay it with a factory that makes a fresh "
                             "provider per session (e.g. lambda: sim.SimulatedWinsock(profile))")
        return target

    def run(self) -> ReplayResult:
        steps = self.trace.steps
        try:
            started = skipping = False
            for index, step in enumerate(steps):
                if step["op"] == "session":
                    # A sim_only case set up its world (a host's port range, faults) by controls the trace
                    # does not hold: no replay, even on a fresh simulator, reproduces it.
                    skipping = step.get("sim_only", False)
                    if skipping:
                        self.result.skipped.append(step.get("name", ""))
                if skipping or index <= self._resume:
                    continue
                if step["op"] == "session" or not started:
                    self._flush_async()
                    self._close_owned()         # a session's provider (an agent and its pipes) ends with it
                    api = self._new_api(not started)
                    started = True
                    if getattr(api, "world", None) is None and _has_threads(steps, index + (step["op"] == "session")):
                        # The case drove a second thread (a close during a blocking call): the trace holds
                        # its calls in one sequence, the blocking call before the one that ended it, which
                        # a target running in real time (not the simulator's virtual time) blocks on.
                        self.result.skipped.append(step.get("name", ""))
                        self.session, skipping = None, True
                        continue
                    self.session = _Session(api, step.get("name", "") if step["op"] == "session" else "",
                                            _completions_by_routine(steps, index + (step["op"] == "session")))
                    self.result.symbols.append(self.session.symbols)
                    if step["op"] == "session":
                        self.result.steps.append(dict(step))
                        continue
                self.result.steps.append(self._execute(step, index, ""))
            self._flush_async()
        finally:
            self._close_owned()
        return self.result

    def _close_owned(self) -> None:
        owned, self._owned = self._owned, []
        for api in owned:
            close = getattr(api, "close", None)
            if callable(close):
                close()

    def _flush_async(self) -> None:
        """At a session's end: what pending operations wrote on one side only, or differently, where an
        operation never completed on a side (harness.replay.asyncwrites)."""
        session = self.session
        if session is None:
            return
        differing = session.async_writes.carry({}, {}, final=True, image=session.recorded_memory)
        if differing:
            index, path = self._where
            self._diverge(index, path, "pending operations, at the end of the session", "writes",
                          {k: a for k, a, _b in differing}, {k: b for k, _a, b in differing}, calls=session.issued)

    def _diverge(self, index, path, fn, fld, recorded, replayed, args=None, calls=()):
        """Record a divergence; `calls`: the regions of the calls that may have written its words."""
        words = {}
        if fld == "writes":
            for key in list({**recorded, **replayed}):
                owner = arguments.attribute(key, calls)
                if owner is None:
                    continue
                if not self._differs_where_compared(key, owner):
                    recorded, replayed = ({k: v for k, v in side.items() if k != key} for side in (recorded, replayed))
                    continue
                words[key] = owner
            if not recorded and not replayed:
                return
        self.result.divergences.append(Divergence(index, path, fn, fld, recorded, replayed,
                                                  self.session.name if self.session else "", args or {}, words))

    def _differs_where_compared(self, key: str, owner: dict) -> bool:
        """Whether the word's two sides differ outside the bytes a replay does not compare (undefined,
        or the host's: harness.replay.uncompared); both sides are read as they are now."""
        session = self.session
        ranges = uncompared_ranges(owner, session.recorded_memory)
        if not ranges:
            return True
        alloc, offset = (int(part) for part in key[5:].split("+"))
        recorded = bytes(session.recorded_memory.get(alloc, b"")[offset:offset + 8])
        if not recorded or alloc >= len(session.symbols.allocs):
            return True
        start, _size, live = session.symbols.allocs[alloc]
        try:
            replayed = session.api.memory.read(start + offset, len(recorded)) if live else None
        except Exception:       # noqa: BLE001 - memory the target no longer maps: compared as reported
            replayed = None
        if replayed is None or len(replayed) != len(recorded):
            return True
        for i, (a, b) in enumerate(zip(recorded, replayed)):
            at = offset + i - owner["pointer"]
            if a != b and not any(lo <= at < hi for lo, hi in ranges):
                return True
        return False

    # -- steps -------------------------------------------------------------------------
    def _execute(self, step: dict, index: int, path: str) -> dict:
        session = self.session
        api, symbols = session.api, session.symbols
        op = step["op"]
        try:
            if op == "alloc":
                ptr = api.memory.alloc(step["size"], step["prot"])
                result = symbols.add_alloc(ptr, step["size"])
                session.recorded_memory[result[1]] = bytearray(step["size"])     # VirtualAlloc zero-fills
                return {**step, "result": result}
            if op == "free":
                ptr = symbols.value(step["ptr"])
                api.memory.free(ptr)
                symbols.free_alloc(ptr)
                return dict(step)
            if op == "protect":
                api.memory.protect(symbols.value(step["ptr"]), step["prot"])
                return dict(step)
            if op == "write":
                ptr = symbols.value(step["ptr"])
                data = symbols.substitute(bytes.fromhex(step["hex"]), step.get("syms", []))
                api.memory.write(ptr, data)
                if isinstance(step["ptr"], list) and step["ptr"][0] == "alloc":
                    session.note_recorded(step["ptr"][1], step["ptr"][2], step["hex"], step.get("syms", []))
                return {**step, "hex": data.hex()}
            if op == "invalid_pointer":
                return {**step, "result": symbols.add_invalid(api.memory.invalid_pointer())}
            if op == "routine":
                return {**step, "result": self._make_routine()}
            if op == "call":
                return self._call(step, index, path)
            if op == "thread":
                if not hasattr(api, "new_thread"):
                    raise NotImplementedError("the target has no simulated threads (new_thread)")
                session.threads.append(api.new_thread(step.get("name", "")))
                return dict(step)
            if op == "enter_thread":
                ctx = api.as_thread(session.threads[step["thread"]])
                ctx.__enter__()
                session.thread_contexts.append(ctx)
                return dict(step)
            if op == "exit_thread":
                if session.thread_contexts:
                    session.thread_contexts.pop().__exit__(None, None, None)
                return dict(step)
        except UnresolvedSymbol as exc:
            self._diverge(index, path, step.get("fn", op), "unresolved", step, str(exc))
            return {**step, "unresolved": str(exc)}
        except Exception as exc:    # noqa: BLE001 - the target refused a memory operation: a divergence
            self._diverge(index, path, op, "step", "ok", f"{type(exc).__name__}: {exc}")
            return {**step, "raised": f"{type(exc).__name__}: {exc}"}
        raise ValueError(f"unknown op {op!r}")

    def _make_routine(self):
        session = self.session
        k = len(session.symbols.routines)

        def routine(dwError, cbTransferred, lpOverlapped, dwFlags):
            record = {"routine": ["routine", k],
                      "args": [dwError, cbTransferred, session.symbols.pointer(lpOverlapped), dwFlags], "calls": []}
            if session.frames:
                session.frames[-1].setdefault("completions", []).append(record)
            # Run the calls the recorded routine made at this invocation.
            j = session.invocations.get(k, 0)
            session.invocations[k] = j + 1
            recorded = session.recorded_completions.get(k, [])
            if j < len(recorded):
                frame_index, frame_path = self._where
                for n, nested in enumerate(recorded[j].get("calls", [])):
                    sub = f"{frame_path}{'.' if frame_path else ''}completions(routine {k} #{j}).calls[{n}]"
                    record["calls"].append(self._execute(nested, frame_index, sub))
                    self._where = (frame_index, frame_path)

        ptr = session.api.completion_routine(routine)
        return session.symbols.add_routine(ptr)

    def _call(self, step: dict, index: int, path: str) -> dict:
        session = self.session
        api, symbols = session.api, session.symbols
        name = step["fn"]
        ret_type, params = (EXT_SIGNATURES if step.get("ext") else SIGNATURES)[name]
        args = [symbols.value(a) for a in step["args"]]
        if step.get("ext"):
            fnptr = symbols.value(step["fnptr"])
            fn = lambda *a: api.call(fnptr, *a)  # noqa: E731
        else:
            fn = getattr(api, name)
        out = {"op": "call", "fn": name, "args": step["args"], "completions": []}
        self._translate_ports(step, args)
        self.result.calls += 1
        output = names.name_output(step, session.recorded_memory, session.recorded_syms)
        rec_before = bytes(session.recorded_memory[output[0][1]]) if output else None
        async_allocs = session.async_writes.allocs()
        before = session.tracker.snapshot()

        def make_call():
            out.pop("raised", None)
            out.pop("ret", None)
            session.frames.append(out)
            try:
                ret = fn(*args)
            except Exception as exc:    # noqa: BLE001 - compared with what the recording saw
                out["raised"] = f"{type(exc).__name__}: {exc}"
                ret = None
            finally:
                session.frames.pop()
            if ret is not None:
                if name == "WSAIoctl" and ret == 0:
                    learn_extension(api.memory, symbols, args)
                out["ret"] = encode_ret(symbols, ret_type, ret)
            out["error"] = api.GetLastError() & 0xFFFFFFFF

        self._where = (index, path)
        make_call()
        loop = self._loops.get(index) if not path else None
        if loop:
            step = self._poll(step, index, loop, out, make_call)
        self._settle(step, params)
        out["writes"] = session.tracker.writes(before, session.tracker.snapshot())
        masked = None
        if output:
            region = names.undefined_region(output, session.recorded_memory)
            if region:
                masked = (region, rec_before, before.get(region[0]))
        regions = arguments.regions(step, params, {i: len(m) for i, m in session.recorded_memory.items()})
        async_allocs.update(self._start_async(step, out, params, regions, output and (output, rec_before,
                                                                                      before.get(output[0][1]))))
        self._compare(step, out, index, path, ret_type, masked, async_allocs, params, regions)
        retire_closed(symbols, out)
        return out

    def _poll(self, step: dict, index: int, loop: tuple, out: dict, make_call) -> dict:
        """A try of a polling loop of the recording (harness.replay.polls), made on the target (`out`):
        the recorded step to compare it with. The target ended the loop at an earlier try: the loop's
        last try, the tries between left out. The target still says "not yet" where the recording's
        loop ended: the call made again (after the recording's wait) until it answers otherwise."""
        steps, last = self.trace.steps, loop[-1]
        recorded, replayed = len(loop), loop.index(index) + 1
        if index != last:
            if polls.says_not_yet(out):
                return step         # the loop goes on on both sides
            self._resume = last
            step = steps[last]
        elif polls.says_not_yet(out) and not polls.says_not_yet(step):
            wait = polls.wait_of(steps, loop)

            def again() -> bool:
                self.session.api.SleepEx(wait, False)
                make_call()
                return polls.says_not_yet(out)
            replayed += polls.retry(again, wait)
            if polls.says_not_yet(out):
                return step         # the target never ended the loop: compared as it is, a divergence
        if replayed != recorded:
            self.result.polls.append({"session": self.session.name, "step": loop[0], "line": loop[0] + 2,
                                      "fn": step["fn"], "recorded": recorded, "replayed": replayed})
        return step

    # The calls that start an operation on an OVERLAPPED (GetQueuedCompletionStatus' lpOverlapped is an
    # out-pointer; GetOverlappedResult and CancelIoEx name an operation already started).
    _ISSUING = frozenset({"WSAIoctl", "WSARecv", "WSASend", "WSARecvMsg", "WSASendMsg", "AcceptEx", "ConnectEx"})

    def _settle(self, step: dict, params) -> None:
        """Before this call's writes are taken: where the recording shows an operation complete (its
        OVERLAPPED's Internal no longer STATUS_PENDING once this call's recorded writes are applied),
        wait, bounded, for the target to complete it too (harness.replay.settle), so what it writes is
        compared with the call that completed it in the recording instead of landing unseen between
        calls or in a later call's writes."""
        session = self.session
        for run in step.get("writes", []):
            session.note_recorded(run["alloc"], run["offset"], run["hex"], run.get("syms", []))
        if step["fn"] in self._ISSUING:
            for (_ctype, pname), sym in zip(params, step["args"]):
                if pname == "lpOverlapped" and isinstance(sym, list) and sym[0] == "alloc":
                    if (sym[1], sym[2]) not in session.outstanding:
                        session.outstanding.append((sym[1], sym[2]))
        done = []
        for alloc, offset in session.outstanding:
            status = names.recorded_int(session.recorded_memory, ["alloc", alloc, offset], 0, 8)
            if status is not None and status != C.STATUS_PENDING:
                done.append((alloc, offset))
        if not done:
            return
        live = [session.symbols.allocs[a][0] + off for a, off in done
                if a < len(session.symbols.allocs) and session.symbols.allocs[a][2]]
        try:
            wait_for_completions(session.api.memory, live)
        except Exception:       # noqa: BLE001 - memory the target no longer maps: compared as it is
            pass
        session.outstanding = [o for o in session.outstanding if o not in done]

    _ADDRESS_INPUTS = frozenset({"bind", "connect", "sendto", "ConnectEx"})
    _MSG_INPUTS = frozenset({"WSASendMsg"})        # the address WSAMSG.name points at (harness.replay.msgname)

    def _address_allocs(self, step: dict) -> dict:
        """{allocation index: port space} of the socket addresses a call step names: its address
        arguments, and the name of the WSAMSG it is handed."""
        session = self.session
        allocs = session.recorded_ports.address_allocs(step)
        located = msgname.msg_name(step, session.recorded_syms)
        if located:
            allocs.setdefault(located[1][1], session.recorded_ports.socket_space(located[0]))
        return allocs

    def _translate_ports(self, step: dict, args: list) -> None:
        """The address a connect/sendto/bind/WSASendMsg names holds the recorded target's port: where the
        system chose that port (an ordinal is known), write this target's port of the same ordinal instead."""
        session = self.session
        mem = session.api.memory
        if step["fn"] in self._MSG_INPUTS:
            located = msgname.msg_name(step, session.recorded_syms)
            if located:
                try:
                    ptr = session.symbols.value(located[1])
                    data = mem.read(ptr, 4)
                except Exception:       # noqa: BLE001 - an address the call is meant to refuse: left alone
                    return
                space = session.recorded_ports.socket_space(located[0])
                new = translate(data, space, session.recorded_ports, session.ports)
                if new != data:
                    mem.write(ptr, new)
            return
        if step["fn"] not in self._ADDRESS_INPUTS:
            return
        for index, space in session.recorded_ports.address_allocs(step).items():
            arg = next(a for a, sym in zip(args, step["args"]) if isinstance(sym, list) and sym[:2] == ["alloc", index])
            try:
                data = mem.read(arg, 4)
            except Exception:       # noqa: BLE001 - an address the call is meant to refuse: left alone
                continue
            new = translate(data, space, session.recorded_ports, session.ports)
            if new != data:
                mem.write(arg, new)

    def _start_async(self, step: dict, out: dict, params, regions=(), name=None) -> dict:
        """A call that starts an operation pending on either side: its memory (the allocations its
        arguments name, and those these point at, as the recording wrote them: a WSABUF's buffer),
        {alloc index: port space or None}, carried by harness.replay.asyncwrites from this call on.
        `name`: the address buffer it returns a length for, with both sides' bytes before the call."""
        session = self.session
        if step["fn"] not in self._ISSUING:
            return {}
        ovl = next((sym for (_c, pname), sym in zip(params, step["args"]) if pname == "lpOverlapped"), None)
        if not (isinstance(ovl, list) and ovl[0] == "alloc"):
            return {}
        if not (overlapped_pending(session.recorded_memory, ovl)
                or target_pending(session.api.memory, session.symbols, ovl)):
            return {}
        ret_type = (EXT_SIGNATURES if step.get("ext") else SIGNATURES)[step["fn"]][0]
        if all(signals_failure(step["fn"], ret_type, c.get("ret")) and c.get("error") not in _PENDING_ERRORS
               for c in (step, out)):
            return {}       # failed at once on both sides: nothing will complete (Internal may still read pending)
        spaces = self._address_allocs(step)
        allocs: dict = {}
        frontier = [a[1] for a in step["args"] if isinstance(a, list) and a[0] == "alloc"]
        for _depth in range(3):         # WSAMSG -> WSABUF array -> buffer
            following = []
            for i in frontier:
                if i not in allocs:
                    allocs[i] = spaces.get(i)
                    following += [sym[1] for sym in session.recorded_syms.get(i, {}).values() if sym[0] == "alloc"]
            frontier = following
        session.async_writes.start(ovl, allocs, name or None)
        session.issued = [list(regions)] + session.issued[:63]
        return allocs

    def _compare(self, rec: dict, out: dict, index: int, path: str, ret_type: str, masked=None,
                 async_allocs=None, params=(), regions=()) -> None:
        session = self.session
        if masked:          # an address buffer beyond the returned length (harness.replay.names)
            region, rec_before, out_before = masked
            rec = {**rec, "writes": names.mask(rec.get("writes", []), region, rec_before)}
            out = {**out, "writes": names.mask(out.get("writes", []), region, out_before)}
        rec_ports, ports = session.recorded_ports, session.ports
        rec_ports.note_call(rec)
        ports.note_call(out)
        allocs = self._address_allocs(rec)
        if allocs:          # ports the system chose compare by order of appearance (harness.replay.ports)
            rec = {**rec, "writes": rec_ports.normalise_runs(rec.get("writes", []), allocs)}
            out = {**out, "writes": ports.normalise_runs(out.get("writes", []), allocs)}
        # so do local addresses and option defaults the host chose (harness.replay.hostvalues)
        rec = session.recorded_hosts.normalise(rec, session.recorded_memory)
        out = session.hosts.normalise(out, session.recorded_memory)
        if async_allocs:    # what pending operations write compares once both sides wrote it
            rec_async = [r for r in rec.get("writes", []) if r["alloc"] in async_allocs]
            out_async = [r for r in out.get("writes", []) if r["alloc"] in async_allocs]
            rec = {**rec, "writes": [r for r in rec.get("writes", []) if r["alloc"] not in async_allocs]}
            out = {**out, "writes": [r for r in out.get("writes", []) if r["alloc"] not in async_allocs]}
            spaces = {i: sp for i, sp in async_allocs.items() if sp is not None and i not in allocs}
            rec_async, out_async = rec_ports.normalise_runs(rec_async, spaces), ports.normalise_runs(out_async, spaces)
        name = rec["fn"]
        if name in _READS_LAST_ERROR and self.last_error == "failure" and not session.error_defined:
            # The last error a successful call left is undefined (Win32; Wine keeps the previous value,
            # the simulator sets 0): reading it is compared only where a failure or a Set defined it.
            out = {**out, "ret": rec.get("ret")}
        elif name not in _READS_LAST_ERROR:
            session.error_defined = name in _SETS_LAST_ERROR or any(
                signals_failure(name, ret_type, c.get("ret")) for c in (rec, out))
        args = {pname: sym for (_c, pname), sym in zip(params, rec.get("args", []))}
        for fld, recorded, replayed in compare_call(rec, out, ret_type, self.last_error):
            self._diverge(index, path, rec["fn"], fld, recorded, replayed, args, [list(regions)] + session.issued)
        if async_allocs is not None:
            pending = session.async_writes
            pending.settle_ops(lambda ovl: overlapped_pending(session.recorded_memory, ovl),
                               lambda ovl: target_pending(session.api.memory, session.symbols, ovl))
            differing = pending.carry(_tokens(rec_async) if async_allocs else {},
                                      _tokens(out_async) if async_allocs else {}, image=session.recorded_memory)
            if differing:
                self._diverge(index, path, rec["fn"], "writes", {k: a for k, a, _b in differing},
                              {k: b for k, _a, b in differing}, args, session.issued + [list(regions)])


def compare_call(rec: dict, out: dict, ret_type: str, last_error: str = "failure") -> list:
    """[(field, recorded, replayed)] where two call steps of the trace format differ: raised, ret,
    error (per the last_error policy of `replay`), writes (8-byte words, symbols compared as
    symbols), completions. The one comparison of replay and of tests/differential."""
    name = rec["fn"]
    out_of = []
    if "raised" in rec or "raised" in out:
        if rec.get("raised", "").split(":")[0] != out.get("raised", "").split(":")[0]:
            out_of.append(("raised", rec.get("raised", "returned"), out.get("raised", "returned")))
        return out_of
    if name not in VOLATILE_RETURNS and rec.get("ret") != out.get("ret"):
        out_of.append(("ret", rec.get("ret"), out.get("ret")))
    compare_error = last_error == "always" or (
        last_error == "failure" and (signals_failure(name, ret_type, rec.get("ret"))
                                     or signals_failure(name, ret_type, out.get("ret"))))
    if compare_error and rec["error"] != out["error"]:
        out_of.append(("error", rec["error"], out["error"]))
    rec_w, out_w = _tokens(rec.get("writes", [])), _tokens(out.get("writes", []))
    if rec_w != out_w:
        keys = sorted(set(rec_w) | set(out_w), key=lambda k: (int(k[5:].split("+")[0]), int(k.split("+")[1])))
        differing = [k for k in keys if rec_w.get(k) != out_w.get(k)]
        out_of.append(("writes", {k: rec_w.get(k, "unchanged") for k in differing},
                       {k: out_w.get(k, "unchanged") for k in differing}))
    rec_c = [(c["routine"], c["args"]) for c in rec.get("completions", [])]
    out_c = [(c["routine"], c["args"]) for c in out.get("completions", [])]
    if rec_c != out_c:
        out_of.append(("completions", rec_c, out_c))
    return out_of


def replay(trace: Trace, target, *, last_error: str = "failure") -> ReplayResult:
    """Re-execute `trace` on `target` (a WinsockApi, or a factory making one per session) and diff.

    last_error: "failure" (default) compares the last error where either
    side's return value is the function's failure value; "always" after
    every call; "never" not at all. Sessions recorded as "sim_only" are left out (result.skipped).
    """
    return Replayer(trace, target, last_error).run()
