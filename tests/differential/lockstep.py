"""Lockstep: one program, run step by step on the simulator and on Wine, compared after each step.

    pair = Pair(sim_api, wine_api)
    pair.run("socket(2, 1, 6)", lambda side: side.api.socket(2, 1, 6))   # -> [Divergence, ...]

Each side wraps its provider in a RecordingApi (harness.replay), so handles,
pointers, completion routines and extension pointers are symbols numbered by
the order the program made them, the same on both sides. A step's calls are
compared with the replayer's own comparison (harness.replay.replayer.compare_call:
return value, last error where either side failed, bytes written, completion
routine invocations), after two normalisations of what legitimately differs:

- ephemeral ports: in allocations the program marks as holding socket
  addresses (of a TCP or UDP socket), a port becomes its order of first
  appearance in that space on that side (harness.replay.ports, as the
  replayer does);
- asynchronous writes: what a pending operation writes (its OVERLAPPED, its
  buffers) lands during the call on the simulator but whenever Wine's async
  machinery gets to it; those allocations are left out of the per-call
  comparison and compared whole after the step, once Wine has been let catch
  up with the simulator (`settle`: every operation complete on the simulator
  is waited for on Wine, bounded, plus a grace for its packet, event or APC).

Everything else (PIDs, TIDs: the recorder's volatile returns) is compared as is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.replay import RecordingApi
from harness.replay.ports import PortOrdinals
from harness.replay.symbols import FreshSymbols, retire_closed
from harness.replay.recorder import EXT_SIGNATURES, SIGNATURES
from harness.replay.settle import internal, wait_for_completions
from harness.replay.replayer import _fmt, _fmt_error, _tokens, compare_call, signals_failure
from harness.winsock import constants as C

SIM_SETTLE_MS = 50         # virtual time the simulator runs before each comparison


class Side:
    """One provider under a RecordingApi, with the program's own names for its values."""

    def __init__(self, name: str, inner, profile: str = ""):
        self.name = name
        self.inner = inner
        self.api = RecordingApi(inner, target=name, profile=profile)
        self.api.symbols = self.api._tracker.symbols = FreshSymbols()
        self.v: dict = {}                   # program name -> this side's value (handle, pointer, port)
        self.ports = PortOrdinals()
        self._mark = len(self.api.trace.steps)

    def new_steps(self) -> list:
        steps = self.api.trace.steps[self._mark:]
        self._mark = len(self.api.trace.steps)
        symbols = self.api.symbols
        for step in steps:
            retire_closed(symbols, step)
        return steps

    def alloc_index(self, ptr: int) -> int:
        sym = self.api.symbols.pointer(ptr)
        assert isinstance(sym, list) and sym[0] == "alloc", f"{ptr:#x} is not a recorded allocation"
        return sym[1]

    def internal(self, ovl: int) -> int:
        return internal(self.inner.memory, ovl)


@dataclass
class Divergence:
    step: str               # the program step (a rule with its arguments)
    call: int               # index of the call within the step (-1: the step as a whole)
    fn: str
    field: str              # ret | error | writes | completions | raised | memory | calls
    sim: object
    wine: object
    args: list = field(default_factory=list)
    sim_error: int | None = None     # each side's last error where its call failed (None: it did not)
    wine_error: int | None = None

    def describe(self) -> str:
        if self.field == "error":
            sim, wine = _fmt_error(self.sim), _fmt_error(self.wine)
        elif isinstance(self.sim, dict) or isinstance(self.wine, dict):
            sim = ", ".join(f"{k}={v}" for k, v in (self.sim or {}).items()) or "nothing"
            wine = ", ".join(f"{k}={v}" for k, v in (self.wine or {}).items()) or "nothing"
        else:
            sim, wine = _fmt(self.sim), _fmt(self.wine)
        call = f"{self.fn}({', '.join(_fmt(a) for a in self.args)})" if self.call >= 0 else self.fn
        return f"{call}: {self.field}: simulator {sim}, Wine {wine}"


def format_call(step: dict) -> str:
    """One recorded call as a line: `WSAIoctl([handle, 2], 1074030207, ...) -> -1 [10045]`."""
    args = ", ".join(_fmt(a) for a in step.get("args", []))
    if "raised" in step:
        return f"{step['fn']}({args}) raised {step['raised']}"
    error = step.get("error")
    return f"{step['fn']}({args}) -> {_fmt(step.get('ret'))}" + (f" [last error {_fmt_error(error)}]" if error else "")


class Pair:
    """The simulator and Wine, driven by one program."""

    def __init__(self, sim_api, wine_api, sim_profile: str = "wine-8.0"):
        self.sim = Side("sim", sim_api, sim_profile)
        self.wine = Side("wine", wine_api, "wine")
        self.sides = (self.sim, self.wine)
        self.async_allocs: set[int] = set()     # allocation indices a pending operation may write
        self.addr_allocs: dict[int, str] = {}   # allocation index holding socket addresses -> port space
        self.data_allocs: set[int] = set()      # allocation indices holding received bytes (never symbols)
        self.overlapped: list[int] = []         # allocation indices of OVERLAPPEDs handed to calls
        self.log: list[tuple] = []              # (step, sim calls, wine calls) of every step run

    # -- the program's bookkeeping (called per side, with that side's pointer) -------------------
    def mark_async(self, side: Side, *ptrs: int) -> None:
        if side is self.sim:
            self.async_allocs.update(side.alloc_index(p) for p in ptrs if p)

    def mark_data(self, side: Side, ptr: int) -> None:
        """`ptr` receives bytes from the network: a word there that equals a handle value is data (Wine's
        handles are small numbers), so it is compared as bytes."""
        if side is self.sim and ptr:
            self.data_allocs.add(side.alloc_index(ptr))

    def mark_address(self, side: Side, ptr: int, space: str) -> None:
        """`ptr` holds addresses of a socket of port space `space` (harness.replay.ports)."""
        if side is self.sim and ptr:
            self.addr_allocs[side.alloc_index(ptr)] = space

    def mark_overlapped(self, side: Side, ovl: int) -> None:
        if side is self.sim:
            index = side.alloc_index(ovl)
            self.async_allocs.add(index)
            if index not in self.overlapped:
                self.overlapped.append(index)

    # -- running ---------------------------------------------------------------------------------
    def run(self, step: str, action) -> list:
        """Run `action(side)` on the simulator, then on Wine; the divergences of this step."""
        self.settle()
        results = []
        for side in self.sides:
            results.append(action(side))
        sim_steps, wine_steps = self.sim.new_steps(), self.wine.new_steps()
        self.log.append((step, sim_steps, wine_steps))
        divergences = self._compare_calls(step, sim_steps, wine_steps)
        if not divergences:
            self.settle()
            divergences = self._compare_async_memory(step)
        return divergences

    def settle(self) -> None:
        """Let the simulator's near-future work happen (SIM_SETTLE_MS of virtual time: what Wine does
        "soon" in real time), then let Wine complete every operation the simulator has completed
        (bounded), then a grace."""
        world = getattr(self.sim.inner, "world", None)
        if world is not None:
            world.run(SIM_SETTLE_MS)
        done = [wine_ptr[0] for sim_ptr, wine_ptr in
                ((self.sim.api.symbols.allocs[i], self.wine.api.symbols.allocs[i]) for i in self.overlapped)
                if sim_ptr[2] and wine_ptr[2] and self.sim.internal(sim_ptr[0]) != C.STATUS_PENDING]
        wait_for_completions(self.wine.inner.memory, done)

    # -- comparing ----------------------------------------------------------------------------------
    def _normalise_runs(self, side: Side, runs: list) -> list:
        out = []
        for run in runs:
            if run["alloc"] in self.async_allocs:
                continue
            if run["alloc"] in self.data_allocs:
                run = {**run, "syms": []}
            if run["alloc"] in self.addr_allocs:
                data = side.ports.normalise(bytes.fromhex(run["hex"]), run["offset"], self.addr_allocs[run["alloc"]])
                run = {**run, "hex": data.hex()}
            out.append(run)
        return out

    def _comparable(self, side: Side, call: dict) -> dict:
        call = dict(call)
        call["writes"] = self._normalise_runs(side, call.get("writes", []))
        call["completions"] = [{**c, "calls": []} for c in call.get("completions", [])]
        return call

    def _compare_calls(self, step: str, sim_steps: list, wine_steps: list) -> list:
        sim_calls = [s for s in sim_steps if s.get("op") == "call"]
        wine_calls = [s for s in wine_steps if s.get("op") == "call"]
        out = []
        for i, (a, b) in enumerate(zip(sim_calls, wine_calls)):
            if a["fn"] != b["fn"] or a["args"] != b["args"]:
                out.append(Divergence(step, i, a["fn"], "calls", format_call(a), format_call(b), a["args"]))
                return out          # the program took another path: later calls compare nothing
            ret_type = (EXT_SIGNATURES if a.get("ext") else SIGNATURES)[a["fn"]][0]
            errors = [c.get("error") if signals_failure(c["fn"], ret_type, c.get("ret")) else None for c in (a, b)]
            for fld, sim_value, wine_value in compare_call(self._comparable(self.sim, a),
                                                           self._comparable(self.wine, b), ret_type):
                out.append(Divergence(step, i, a["fn"], fld, sim_value, wine_value, a["args"], *errors))
            if out:
                return out
        if len(sim_calls) != len(wine_calls):
            out.append(Divergence(step, min(len(sim_calls), len(wine_calls)), "(program)", "calls",
                                  [format_call(c) for c in sim_calls], [format_call(c) for c in wine_calls]))
        return out

    def _memory_tokens(self, side: Side, index: int) -> dict:
        start, size, live = side.api.symbols.allocs[index]
        if not (live and size):
            return {}
        data = side.inner.memory.read(start, size)
        if index in self.addr_allocs:
            data = side.ports.normalise(data, 0, self.addr_allocs[index])
        syms = [] if index in self.data_allocs else side.api.symbols.scan(start, data)
        return _tokens([{"alloc": index, "offset": 0, "hex": data.hex(), "syms": syms}])

    def _compare_async_memory(self, step: str) -> list:
        out = []
        for index in sorted(self.async_allocs):
            a, b = self._memory_tokens(self.sim, index), self._memory_tokens(self.wine, index)
            if a != b:
                keys = [k for k in a if a.get(k) != b.get(k)] + [k for k in b if k not in a]
                out.append(Divergence(step, -1, f"memory of allocation {index}", "memory",
                                      {k: a.get(k, "-") for k in keys}, {k: b.get(k, "-") for k in keys}))
        return out

    def transcript(self, last: int | None = None) -> str:
        """The program's steps with each side's calls (the last `last` steps)."""
        lines = []
        for step, sim_steps, wine_steps in self.log[-last if last else 0:]:
            lines.append(f"  {step}")
            sim_calls = [s for s in sim_steps if s.get("op") == "call"]
            wine_calls = [s for s in wine_steps if s.get("op") == "call"]
            for i in range(max(len(sim_calls), len(wine_calls))):
                a = format_call(sim_calls[i]) if i < len(sim_calls) else "-"
                b = format_call(wine_calls[i]) if i < len(wine_calls) else "-"
                lines.append(f"      sim:  {a}")
                if b != a:
                    lines.append(f"      wine: {b}")
        return "\n".join(lines)
