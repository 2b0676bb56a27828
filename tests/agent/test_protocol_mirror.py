"""harness/agent/protocol.py mirrors driver-fixtures/winsock-agent/src/protocol.h."""
import re

from harness.agent import build
from harness.agent import protocol as P


def _header():
    return (build.source_dir() / "src" / "protocol.h").read_text()


def test_scalar_constants_agree():
    text = _header()
    defines = dict(re.findall(r"#define (\w+) (.+)", text))
    assert int(defines["PROTOCOL_VERSION"]) == P.PROTOCOL_VERSION
    assert defines["HELLO_MAGIC"].strip('"').encode() == P.HELLO_MAGIC
    assert defines["MAX_FRAME"] == "(16u << 20)" and P.MAX_FRAME == 16 << 20
    assert int(defines["MAX_ARGS"]) == P.MAX_ARGS
    assert int(defines["REQUEST_HEADER"]) == P.REQUEST_HEADER
    assert int(defines["ALIGN"]) == P.ALIGN


def test_operations_statuses_and_protections_agree():
    text = _header()
    ops = {name: int(v) for name, v in re.findall(r"\b(OP_\w+) = (\d+)", text)}
    assert ops == {f"OP_{name}": value for value, name in P.OP_NAMES.items()}
    statuses = {name: int(v) for name, v in re.findall(r"\b(ST_\w+) = (\d+)", text)}
    assert statuses == {"ST_OK": P.ST_OK, "ST_ERROR": P.ST_ERROR}
    prots = {name: int(v) for name, v in re.findall(r"\bPROT_(\w+) = (\d+)", text)}
    assert prots == {k.upper(): v for k, v in P.PROT.items()}
