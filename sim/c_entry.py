"""How a C-shaped call enters the simulator: its arguments, the world lock, the calling
thread, and ws2_32's check order.

ws2_32 checks a call in one order before any provider sees it
(docs/windows-observed.md items 1-5): WSAStartup first (WSANOTINITIALISED),
then the socket handle (WSAENOTSOCK). `ws2_checks` is that rule; `ws2_call`
generates each entry point's wrapper with the same rule inlined (it runs on
every call: bench/ measures it), and tests/test_c_entry.py compares the
generated wrappers with `ws2_checks` on every entry point.
"""
from __future__ import annotations

import functools
import inspect

from harness.winsock import constants as C
from harness.winsock.ctype import COERCION_NAMESPACE, coercion_lines, parse_signature


SOCKET_ERROR = C.SOCKET_ERROR
INVALID_SOCKET = C.INVALID_SOCKET


def ws2_checks(process, s=None):
    """ws2_32's checks, in order: (socket or None, 0) or (None, error). `s=None`: startup only."""
    if process.wsa_refcount == 0:
        return None, C.WSANOTINITIALISED
    if s is None:
        return None, 0
    sock = process.sockets.get(s)
    if sock is None:
        return None, C.WSAENOTSOCK
    return sock, 0


def ws2_call(signature: str, failure=SOCKET_ERROR, *, on_socket: bool = True):
    """A ws2_32 entry point: `cfunc`'s argument checks, then the lock, the current thread and
    ws2_32's checks (`ws2_checks`, inlined), in one generated function.

    on_socket: the signature's first parameter is the SOCKET, and the method
    receives (thread, sock, rest...) in its place; otherwise the call is
    checked for startup only and the method receives (thread, every parameter).
    The wrapper advertises the C signature. One frame, and the lock taken
    without a `with`: this runs on every call (bench/ measures it).
    """
    params = parse_signature(signature)
    names = [n for _, n in params]

    def decorate(fn):
        expected = ["self", "thread"] + (["sock"] + names[1:] if on_socket else names)
        if list(inspect.signature(fn).parameters) != expected:
            raise ValueError(f"{fn.__name__}: parameters must be {expected}")
        lines = [f"def {fn.__name__}(self, {', '.join(names)}):"]
        lines += coercion_lines(params, fn.__name__)
        lines += [
            "    lock = self._lock",
            "    lock.acquire()",
            "    try:",
            "        thread = self._enter()",
            "        process = self.process",
            "        if process.wsa_refcount == 0:",
            "            thread.last_error = WSANOTINITIALISED",
            "            return failure"]
        if on_socket:
            rest = "".join(f", {n}" for n in names[1:])
            lines += [
                f"        sock = process.sockets.get({names[0]})",
                "        if sock is None:",
                "            thread.last_error = WSAENOTSOCK",
                "            return failure",
                f"        return _fn(self, thread, sock{rest})"]
        else:
            lines += [f"        return _fn(self, thread{''.join(f', {n}' for n in names)})"]
        lines += [
            "    finally:",
            "        lock.release()"]
        namespace = dict(COERCION_NAMESPACE, _fn=fn, failure=failure, WSANOTINITIALISED=C.WSANOTINITIALISED,
                         WSAENOTSOCK=C.WSAENOTSOCK)
        exec("\n".join(lines), namespace)  # noqa: S102 - generated from the declared signature
        wrapper = functools.wraps(fn)(namespace[fn.__name__])
        del wrapper.__wrapped__                 # advertise the C signature, not fn's (thread, sock, ...)
        wrapper.__c_signature__ = tuple(params)
        wrapper.__ws2_call__ = (failure, on_socket)      # for tests/test_c_entry.py
        return wrapper
    return decorate


def socket_call(signature: str, failure=SOCKET_ERROR):
    """ws2_call on a socket: the method receives (thread, sock, ...)."""
    return ws2_call(signature, failure, on_socket=True)


class CallEntry:
    """What every entry point of SimulatedWinsock shares: the calling thread and the last error."""

    def _enter(self):
        """Fire what virtual time has made due, and name the calling simulated thread."""
        scheduler = self._scheduler
        if scheduler.next_due_ns <= scheduler.now_ns:
            scheduler.run_due()
        # Process.current_thread's first step inline (a Python thread that has called before).
        return self._tls.__dict__.get("thread") or self.process.current_thread()

    @staticmethod
    def _ok(thread, value=0):
        thread.last_error = 0
        return value

    @staticmethod
    def _err(thread, code, value=SOCKET_ERROR):
        thread.last_error = code
        return value

