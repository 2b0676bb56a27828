"""C source generated from the contract, for checking it against real headers.

`static_asserts(layouts, constants)` turns layouts.py tables and SDK constants
into C11 `_Static_assert`s; compiled after `PRELUDE` (or any prelude that
declares the same names) they prove sizes, offsets, member sizes and values
at compile time. tests/test_contract_mingw.py compiles them with
x86_64-w64-mingw32-gcc; the native provider's tests can reuse them.

Every assert is one line whose message starts with the Python name it
checks, so a compiler error can be traced back to the table entry.

Integer constants are compared as bit patterns of the C expression's own
width: `(NAME mod 2**(8*sizeof NAME)) == (value mod 2**(8*sizeof NAME))`,
plus "the value fits that width, signed or unsigned", plus "C's value is
negative" when the Python value is. So STATUS_* (signed
NTSTATUS in C, positive here), FWP_E_NOT_FOUND (negative HRESULT here) and
pointer-sized INVALID_SOCKET/INVALID_HANDLE_VALUE all compare the way a C
caller sees them. Pointer-valued constants rely on GCC folding a pointer
cast in a static assert (a GNU extension; do not add -pedantic-errors).
"""
from __future__ import annotations

import uuid
from typing import Iterable, Mapping

from harness.winsock import layouts as _layouts

# Headers that define the contract's names in mingw-w64 and compile together.
# WIN32_NO_STATUS must precede winsock2.h (which includes windows.h) so that
# winnt.h leaves the STATUS_* codes to ntstatus.h.
HEADERS = ("winsock2.h", "ws2tcpip.h", "mswsock.h", "mstcpip.h", "ws2ipdef.h",
           "windows.h", "winerror.h", "fwptypes.h", "fwpmtypes.h", "fwpmu.h", "ws2spi.h")

PRELUDE = "\n".join(
    ["#define WIN32_NO_STATUS"]
    + [f"#include <{h}>" for h in HEADERS[:6]]
    + ["#undef WIN32_NO_STATUS", "#include <ntstatus.h>"]
    + [f"#include <{h}>" for h in HEADERS[6:]]
    + ["#include <stddef.h>",
       "#define CDEFS_MASK(n) ((n) >= 8 ? ~0ULL : ((1ULL << (8 * (n))) - 1))", ""])


def c_int(value: int) -> str:
    """A C literal of type (unsigned) long long with this value."""
    if value == -(1 << 63):
        return "(-9223372036854775807LL - 1)"
    return f"({value}LL)" if value < 0 else f"{value:#x}ULL"


def _min_bytes(value: int) -> int:
    """Smallest C width (1, 2, 4, 8) that holds value as signed or unsigned."""
    for n in (1, 2, 4, 8):
        if -(1 << (8 * n - 1)) <= value < (1 << (8 * n)):
            return n
    raise ValueError(f"{value} does not fit 64 bits")


def constant_assert(name: str, value: int) -> str:
    """One line asserting that C's `name` has the bit pattern of `value`."""
    m = f"CDEFS_MASK(sizeof({name}))"
    sign = f"({name}) < 0 && " if value < 0 else ""
    return (f"_Static_assert(sizeof({name}) >= {_min_bytes(value)} && {sign}"
            f"((unsigned long long)({name}) & {m}) == ((unsigned long long){c_int(value)} & {m}), "
            f"\"{name} == {value:#x}\");")


def layout_asserts(layout, c_type: str | None = None) -> list[str]:
    """sizeof the type, then offsetof and sizeof of every field."""
    t = c_type or layout.name
    out = [f"_Static_assert(sizeof({t}) == {layout.size}, \"{layout.name}: sizeof == {layout.size}\");"]
    for f in layout.fields:
        member = f.c_name or f.name
        out.append(f"_Static_assert(offsetof({t}, {member}) == {f.offset}, "
                   f"\"{layout.name}.{f.name}: offsetof({member}) == {f.offset}\");")
        out.append(f"_Static_assert(sizeof((({t} *)0)->{member}) == {f.size}, "
                   f"\"{layout.name}.{f.name}: sizeof({member}) == {f.size} (fmt {f.fmt})\");")
    return out


def static_asserts(layouts: Iterable, constants: Mapping[str, int],
                   type_names: Mapping[str, str] | None = None) -> str:
    """C source (no includes) asserting every layout and every constant.

    `type_names` maps a Layout.name to the C type to use when a compiler's
    headers spell it differently.
    """
    type_names = type_names or {}
    lines = []
    for lay in layouts:
        lines += layout_asserts(lay, type_names.get(lay.name))
    lines += [constant_assert(n, v) for n, v in constants.items()]
    return "\n".join(lines) + "\n"


def cmsg_asserts(lengths: Iterable[int]) -> str:
    """Assert layouts.WSA_CMSG_* arithmetic against the header macros."""
    L = _layouts
    lines = [f"_Static_assert((size_t)WSA_CMSG_DATA((WSACMSGHDR *)0) == {L.WSA_CMSG_DATA_OFFSET()}, "
             f"\"WSA_CMSG_DATA offset == {L.WSA_CMSG_DATA_OFFSET()}\");"]
    for n in lengths:
        for macro, fn in (("WSA_CMSG_LEN", L.WSA_CMSG_LEN), ("WSA_CMSG_SPACE", L.WSA_CMSG_SPACE),
                          ("WSA_CMSGHDR_ALIGN", L.WSA_CMSGHDR_ALIGN),
                          ("WSA_CMSGDATA_ALIGN", L.WSA_CMSGDATA_ALIGN)):
            lines.append(f"_Static_assert({macro}({n}) == {fn(n)}, \"{macro}({n}) == {fn(n)}\");")
    return "\n".join(lines) + "\n"


def guid_definitions(guids: Mapping[str, uuid.UUID]) -> str:
    """`const GUID cdefs_guid_NAME = NAME;` for each braced-initializer macro.

    Compile with -c and read the 16 bytes of each symbol back; compare with
    `uuid.bytes_le`. (A name declared with DEFINE_GUID is instead a variable:
    compile with INITGUID defined and read the symbol NAME itself.)
    """
    return "".join(f"const GUID cdefs_guid_{n} = {n};\n" for n in guids)
