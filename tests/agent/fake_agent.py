"""A hostile stand-in for the winsock-agent: `python fake_agent.py MODE` misbehaves on stdio as MODE says."""
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from harness.agent import protocol as P  # noqa: E402

out = sys.stdout.buffer
inp = sys.stdin.buffer


def frame(rid, op, body=b"", status=0):
    payload = struct.pack("<IIHH", rid, 0, op, status) + body
    out.write(struct.pack("<I", len(payload)) + payload)
    out.flush()


def hello(version=P.PROTOCOL_VERSION, magic=P.HELLO_MAGIC):
    body = P.HELLO_FIXED.pack(magic, version, os.getpid(), 4096, 65536, P.MAX_FRAME, P.MAX_ARGS, 0)
    body += P.pack_str8("fake") + P.pack_str8("Fake OS") + struct.pack("<I", 0)
    frame(0, P.OP_HELLO, body)


def next_request():
    (n,) = struct.unpack("<I", inp.read(4))
    payload = inp.read(n)
    rid, tag, op, _ = struct.unpack_from("<IIHH", payload)
    return rid, op


mode = sys.argv[1]
sys.stderr.write(f"fake agent: mode {mode}\n")
sys.stderr.flush()
if mode == "garbage":
    out.write(b"HTTP/1.1 200 OK\r\n\r\n")
    out.flush()
elif mode == "bad-magic":
    hello(magic=b"NOPE")
elif mode == "old-version":
    hello(version=P.PROTOCOL_VERSION - 1)
elif mode == "silent":
    pass
elif mode == "stderr-flood":
    chunk = b"x" * (1 << 20)
    for _ in range(64):                                      # 64 MiB on one line, then a HELLO
        sys.stderr.buffer.write(chunk)
    sys.stderr.buffer.write(b"\nlast line\n")
    sys.stderr.flush()
    hello()
else:
    hello()
    rid, op = next_request()
    if mode == "oversized":
        out.write(struct.pack("<I", P.MAX_FRAME + 1))        # then nothing: the length alone must be refused
        out.flush()
    elif mode == "huge":
        out.write(struct.pack("<I", 0xFFFFFFFF) + b"x" * 65536)
        out.flush()
    elif mode == "stall":
        out.write(b"\x10\x00")                               # half a length, then silence
        out.flush()
    elif mode == "wrong-id":
        frame(rid + 1000, op)
    elif mode == "truncated":
        out.write(struct.pack("<I", 64) + struct.pack("<IIHH", rid, 0, op, 0))
        out.flush()
        sys.exit(0)
    elif mode == "short-body":
        frame(rid, op, b"\x01\x02")                          # an 8-byte answer cut to 2
    elif mode == "crash":
        sys.stderr.write("fake agent: crashing now\n")
        sys.stderr.flush()
        os._exit(7)
time.sleep(60)                                               # hang, holding the pipes open
