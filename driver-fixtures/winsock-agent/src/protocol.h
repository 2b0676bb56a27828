/*
 * winsock-agent wire protocol (see ../README.md). Shared constants; the
 * Python side (harness/agent/protocol.py) mirrors them and checks the
 * version in the HELLO the agent sends first.
 *
 * Frame: u32 payload length (little endian), then the payload; at most
 * MAX_FRAME bytes, on both sides. Request payload: u32 id, u32 thread tag,
 * u16 op, u16 reserved, body. Response payload: u32 id, u32 thread tag,
 * u16 op, u16 status, body.
 */
#ifndef WINSOCK_AGENT_PROTOCOL_H
#define WINSOCK_AGENT_PROTOCOL_H

#define PROTOCOL_VERSION 1
#define HELLO_MAGIC "WFPA"
#define MAX_FRAME (16u << 20)
#define MAX_ARGS 12
#define REQUEST_HEADER 12
#define ALIGN 16

enum op {
    OP_HELLO = 0,        /* agent -> client, unsolicited, first frame */
    OP_PING = 1,
    OP_RESOLVE = 2,      /* u32 n, n x (str8 dll, str8 name) -> n x u64 address (0: not found) */
    OP_CALL = 3,         /* [thread] u64 fn, u8 nargs, nargs x u64 -> see run_call */
    OP_NEW_THREAD = 4,   /* -> u32 tag, u32 tid, u64 handle */
    OP_END_THREAD = 5,   /* u32 tag */
    OP_ROUTINE = 6,      /* -> u64 trampoline */
    OP_ALLOC = 7,        /* u64 size, u8 prot -> u64 start */
    OP_FREE = 8,         /* u64 start */
    OP_PROTECT = 9,      /* u64 start, u8 prot */
    OP_READ = 10,        /* u64 ptr, u32 n -> n bytes */
    OP_WRITE = 11,       /* u64 ptr, bytes */
    OP_INVALID = 12,     /* -> u64 never-committed address */
    OP_RETIRE = 13,      /* u32 n, n x u64 start -> u64 unknown count */
    OP_EXIT = 14,
};

enum status { ST_OK = 0, ST_ERROR = 1 };
enum prot { PROT_RW = 0, PROT_R = 1, PROT_NONE = 2 };

#endif
