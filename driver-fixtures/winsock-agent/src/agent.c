/*
 * winsock-agent: executes Winsock/kernel32 calls for the wfp-harness over a
 * framed binary protocol on stdin/stdout (see ../README.md and protocol.h).
 *
 * A TEST TOOL: it calls any function pointer it resolved for the client and
 * reads/writes its own memory on request. Run it only as a child process, under
 * wine64, or through an SSH exec channel; never connect it to a listening socket.
 *
 * Threads: the main thread reads requests and answers memory, resolve, thread
 * and routine requests itself; CALLs go to the worker thread named in the
 * request, so a blocking call on one worker never blocks another or the reader.
 * Responses are written whole under one lock.
 */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>
#include <fcntl.h>
#include <io.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

/* The harness's mingw build passes the hash of the sources; other builds say what they are. */
#ifndef AGENT_BUILD_ID
#ifdef _MSC_VER
#define AGENT_BUILD_ID "msvc " __DATE__
#else
#define AGENT_BUILD_ID "unversioned"
#endif
#endif

/* ------------------------------------------------------------------------ */
/* Diagnostics: stderr only (stdout carries frames).                        */

static void note(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    DWORD done;
    WriteFile(GetStdHandle(STD_ERROR_HANDLE), line, (DWORD)n, &done, NULL);
}

static void die(const char *fmt, ...)
{
    char line[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    note("winsock-agent: %s", line);
    /* TerminateProcess, not ExitProcess: a worker blocked inside ws2_32 may hold
     * locks that DLL detach would wait for. */
    TerminateProcess(GetCurrentProcess(), 3);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory (%zu bytes)", n);
    return p;
}

/* ------------------------------------------------------------------------ */
/* Byte buffers                                                             */

struct out { uint8_t *p; size_t len, cap; };

static void out_reserve(struct out *o, size_t more)
{
    if (o->len + more <= o->cap) return;
    size_t cap = o->cap ? o->cap : 256;
    while (cap < o->len + more) cap *= 2;
    uint8_t *p = realloc(o->p, cap);
    if (!p) die("out of memory (%zu bytes)", cap);
    o->p = p;
    o->cap = cap;
}
static void put(struct out *o, const void *v, size_t n) { out_reserve(o, n); memcpy(o->p + o->len, v, n); o->len += n; }
static void put_u8(struct out *o, uint8_t v) { put(o, &v, 1); }
static void put_u32(struct out *o, uint32_t v) { put(o, &v, 4); }  /* x64 is little endian, as the wire */
static void put_u64(struct out *o, uint64_t v) { put(o, &v, 8); }
static void put_str8(struct out *o, const char *s)
{
    size_t n = strlen(s);
    if (n > 255) n = 255;
    put_u8(o, (uint8_t)n);
    put(o, s, n);
}

struct in { const uint8_t *p; size_t left; int bad; };

static void get(struct in *i, void *v, size_t n)
{
    if (i->bad || i->left < n) { i->bad = 1; memset(v, 0, n); return; }
    memcpy(v, i->p, n);
    i->p += n;
    i->left -= n;
}
static uint8_t get_u8(struct in *i) { uint8_t v; get(i, &v, 1); return v; }
static uint32_t get_u32(struct in *i) { uint32_t v; get(i, &v, 4); return v; }
static uint64_t get_u64(struct in *i) { uint64_t v; get(i, &v, 8); return v; }
/* A u8-length string copied into buf (NUL terminated). */
static void get_str8(struct in *i, char *buf, size_t size)
{
    uint8_t n = get_u8(i);
    if (n >= size) { i->bad = 1; buf[0] = 0; return; }
    get(i, buf, n);
    buf[i->bad ? 0 : n] = 0;
}

/* ------------------------------------------------------------------------ */
/* Framed I/O                                                               */

static HANDLE in_h, out_h;
static CRITICAL_SECTION out_lock;

static int read_exact(void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n) {
        DWORD got = 0;
        DWORD want = n > (1u << 20) ? (1u << 20) : (DWORD)n;
        if (!ReadFile(in_h, p, want, &got, NULL) || got == 0) return 0;
        p += got;
        n -= got;
    }
    return 1;
}

static void write_all(const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        DWORD done = 0;
        if (!WriteFile(out_h, p, (DWORD)(n > (1u << 20) ? (1u << 20) : n), &done, NULL) || !done)
            die("stdout closed (error %lu); exiting", GetLastError());
        p += done;
        n -= done;
    }
}

/* Send one response frame. `o` holds the body after RESPONSE_HEADER spare bytes. */
static void send_frame(struct out *o, uint32_t id, uint32_t tag, uint16_t op, uint16_t status)
{
    size_t payload = o->len - 4;
    if (payload > MAX_FRAME) die("response of %zu bytes exceeds the frame limit", payload);
    uint32_t len = (uint32_t)payload;
    memcpy(o->p, &len, 4);
    memcpy(o->p + 4, &id, 4);
    memcpy(o->p + 8, &tag, 4);
    memcpy(o->p + 12, &op, 2);
    memcpy(o->p + 14, &status, 2);
    DWORD saved = GetLastError();        /* WriteFile must not leak into the caller's last error */
    EnterCriticalSection(&out_lock);
    write_all(o->p, o->len);
    LeaveCriticalSection(&out_lock);
    SetLastError(saved);
}

/* A buffer with room for the length prefix and response header. */
static void begin(struct out *o) { o->len = 0; out_reserve(o, 16); o->len = 16; }

static void reply_error(uint32_t id, uint32_t tag, uint16_t op, const char *fmt, ...)
{
    struct out o = {0};
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if (n >= (int)sizeof msg) n = (int)sizeof msg - 1;
    begin(&o);
    put(&o, msg, (size_t)n);
    send_frame(&o, id, tag, op, ST_ERROR);
    free(o.p);
}

/* ------------------------------------------------------------------------ */
/* Guarded calls: a fault inside a call becomes a result, not a dead agent.  */
/*
 * guarded_call() carries a frame-based exception handler. The dispatcher
 * consults it only after every frame the callee pushed has declined the
 * exception, so ws2_32's own __try/__except blocks (which turn bad pointers
 * into WSAEFAULT) still run first; a vectored handler would pre-empt them and
 * change the result. An exception that reaches our frame would have killed
 * the process: we record it and return to the call site.
 *
 * MSVC: __try/__except. mingw-w64 gcc has no __try: the function names a
 * handler with .seh_handler (the mechanism behind mingw-w64's __try1), and
 * the handler longjmps (__builtin_longjmp: no unwinding) to the call site.
 */

struct guard {
    void *jb[5];                 /* __builtin_setjmp buffer (gcc) */
    volatile int active;
    uint32_t code;
    uint64_t address, info0, info1;
};

static DWORD tls_guard = TLS_OUT_OF_INDEXES;
static DWORD tls_worker = TLS_OUT_OF_INDEXES;

typedef uint64_t (*fn_t)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                         uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);

static void guard_record(struct guard *g, const EXCEPTION_RECORD *rec)
{
    g->active = 0;
    g->code = rec->ExceptionCode;
    g->address = (uint64_t)(uintptr_t)rec->ExceptionAddress;
    g->info0 = rec->NumberParameters > 0 ? rec->ExceptionInformation[0] : 0;
    g->info1 = rec->NumberParameters > 1 ? rec->ExceptionInformation[1] : 0;
}

#if defined(_MSC_VER)

static int guard_filter(const EXCEPTION_POINTERS *ep, struct guard *g)
{
    guard_record(g, ep->ExceptionRecord);
    return EXCEPTION_EXECUTE_HANDLER;
}

/* Returns 0 and *ret = RAX, or 1 if an exception reached this frame (details in *g). */
static __declspec(noinline) int guarded_call(struct guard *g, fn_t f, const uint64_t *a, uint64_t *ret)
{
    g->code = 0;
    g->active = 1;
    __try {
        /* All-uint64 arguments: on Win64 every integer/pointer argument occupies one
         * 64-bit register or stack slot, and surplus arguments are harmless. */
        *ret = f(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]);
    } __except (guard_filter(GetExceptionInformation(), g)) {
        return 1;
    }
    g->active = 0;
    return 0;
}

#else

__attribute__((used)) EXCEPTION_DISPOSITION agent_guard_handler(EXCEPTION_RECORD *rec, void *frame,
                                                               CONTEXT *ctx, void *dispatch)
{
    (void)frame; (void)ctx; (void)dispatch;
    if (rec->ExceptionFlags & (EXCEPTION_UNWINDING | EXCEPTION_EXIT_UNWIND))
        return ExceptionContinueSearch;
    DWORD err = GetLastError();                /* TlsGetValue clears it */
    struct guard *g = TlsGetValue(tls_guard);
    SetLastError(err);
    if (!g || !g->active)
        return ExceptionContinueSearch;
    guard_record(g, rec);
    __builtin_longjmp(g->jb, 1);
}

/* Returns 0 and *ret = RAX, or 1 if an exception reached this frame (details in *g). */
__attribute__((noinline)) static int guarded_call(struct guard *g, fn_t f, const uint64_t *a, uint64_t *ret)
{
    __asm__ __volatile__(".seh_handler agent_guard_handler, @except\n\t");
    if (__builtin_setjmp(g->jb))
        return 1;
    g->code = 0;
    g->active = 1;
    /* All-uint64 arguments: on Win64 every integer/pointer argument occupies one
     * 64-bit register or stack slot, and surplus arguments are harmless. */
    *ret = f(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]);
    g->active = 0;
    return 0;
}

#endif

static int guarded_copy(struct guard *g, void *dst, const void *src, size_t n)
{
    uint64_t a[MAX_ARGS] = {(uint64_t)(uintptr_t)dst, (uint64_t)(uintptr_t)src, n};
    uint64_t ignored;
    return guarded_call(g, (fn_t)(void *)memcpy, a, &ignored);
}

/* ------------------------------------------------------------------------ */
/* Callable pointers: functions resolved for the client, and extension       */
/* function pointers written by SIO_GET_EXTENSION_FUNCTION_POINTER.          */

struct callable { uint64_t ptr; char name[64]; };
static struct callable *callables;
static size_t n_callables, cap_callables;
static SRWLOCK callables_lock = SRWLOCK_INIT;
static uint64_t addr_WSAIoctl;

static void add_callable(uint64_t ptr, const char *name)
{
    AcquireSRWLockExclusive(&callables_lock);
    for (size_t i = 0; i < n_callables; i++)
        if (callables[i].ptr == ptr) { ReleaseSRWLockExclusive(&callables_lock); return; }
    if (n_callables == cap_callables) {
        cap_callables = cap_callables ? cap_callables * 2 : 64;
        struct callable *p = realloc(callables, cap_callables * sizeof *p);
        if (!p) die("out of memory");
        callables = p;
    }
    callables[n_callables].ptr = ptr;
    snprintf(callables[n_callables].name, sizeof callables[n_callables].name, "%s", name);
    n_callables++;
    ReleaseSRWLockExclusive(&callables_lock);
}

static int is_callable(uint64_t ptr)
{
    int found = 0;
    AcquireSRWLockShared(&callables_lock);
    for (size_t i = 0; i < n_callables && !found; i++)
        found = callables[i].ptr == ptr;
    ReleaseSRWLockShared(&callables_lock);
    return found;
}

static const struct { GUID guid; const char *name; int stream; } extensions[] = {
    {WSAID_WSARECVMSG, "WSARecvMsg", 0},
    {WSAID_WSASENDMSG, "WSASendMsg", 0},
    {WSAID_ACCEPTEX, "AcceptEx", 1},
    {WSAID_CONNECTEX, "ConnectEx", 1},
    {WSAID_GETACCEPTEXSOCKADDRS, "GetAcceptExSockaddrs", 1},
};
#define N_EXTENSIONS (sizeof extensions / sizeof extensions[0])
static uint64_t known_extension[N_EXTENSIONS];

static const char *extension_name(const GUID *guid)
{
    for (size_t i = 0; i < N_EXTENSIONS; i++)
        if (!memcmp(guid, &extensions[i].guid, sizeof *guid)) return extensions[i].name;
    return NULL;
}

/* Fetch every extension function once at startup, from throwaway sockets, so
 * pointers the client obtained by other means are callable too. */
static void learn_extensions(void)
{
    WSADATA data;
    if (WSAStartup(MAKEWORD(2, 2), &data)) { note("winsock-agent: WSAStartup failed at startup"); return; }
    for (size_t i = 0; i < N_EXTENSIONS; i++) {
        int stream = extensions[i].stream;
        SOCKET s = socket(AF_INET, stream ? SOCK_STREAM : SOCK_DGRAM, stream ? IPPROTO_TCP : IPPROTO_UDP);
        if (s == INVALID_SOCKET) continue;
        GUID guid = extensions[i].guid;
        void *fn = NULL;
        DWORD n = 0;
        if (!WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof guid, &fn, sizeof fn, &n, NULL, NULL)
                && fn) {
            known_extension[i] = (uint64_t)(uintptr_t)fn;
            add_callable(known_extension[i], extensions[i].name);
        }
        closesocket(s);
    }
    WSACleanup();
}

/* ------------------------------------------------------------------------ */
/* Completion-routine trampolines                                           */
/*
 * Each routine pointer handed to the client is a distinct 48-byte thunk in an
 * executable chunk that calls record_completion(dwError, cbTransferred,
 * lpOverlapped, dwFlags, <its own address>). Thunks are never freed or reused:
 * an APC for one may still be queued when its client has moved on.
 */

#define THUNK_CHUNK 65536
#define THUNKS_PER_CHUNK 1024
#define THUNK_SIZE 48
#define THUNK_TABLE_OFFSET 16
#define THUNK_CODE_OFFSET 12352          /* after 1024 RUNTIME_FUNCTIONs, 64-aligned */

struct completion { uint64_t routine; uint32_t error, transferred; uint64_t overlapped; uint32_t flags, pad; };

struct worker {
    uint32_t tag;
    DWORD tid;
    HANDLE thread;
    CRITICAL_SECTION lock;
    CONDITION_VARIABLE wake;     /* workers idle here: a wait that is not alertable */
    struct job *head, *tail;
    volatile LONG busy;          /* jobs queued or running */
    DWORD last_error;            /* the thread's last error between calls */
    struct guard guard;
    struct completion *done;
    uint32_t n_done, cap_done, lost;
    struct worker *next;
};

struct job { struct job *next; uint32_t id; uint16_t op; size_t len; uint8_t body[]; };

#define MAX_COMPLETIONS_PER_CALL 65536

static void record_completion(DWORD error, DWORD transferred, void *overlapped, DWORD flags, uint64_t routine)
{
    DWORD saved = GetLastError();   /* a routine that does nothing leaves the last error alone */
    struct worker *w = TlsGetValue(tls_worker);
    if (w) {
        if (w->n_done == w->cap_done && w->cap_done < MAX_COMPLETIONS_PER_CALL) {
            uint32_t cap = w->cap_done ? w->cap_done * 2 : 16;
            struct completion *p = realloc(w->done, cap * sizeof *p);
            if (p) { w->done = p; w->cap_done = cap; }
        }
        if (w->n_done < w->cap_done) {
            struct completion *c = &w->done[w->n_done++];
            c->routine = routine;
            c->error = error;
            c->transferred = transferred;
            c->overlapped = (uint64_t)(uintptr_t)overlapped;
            c->flags = flags;
            c->pad = 0;
        } else {
            w->lost++;
        }
    }
    SetLastError(saved);
}

static uint8_t *thunk_chunk;
static unsigned thunks_used = THUNKS_PER_CHUNK;

static uint64_t new_thunk(void)
{
    if (thunks_used == THUNKS_PER_CHUNK) {
        uint8_t *base = VirtualAlloc(NULL, THUNK_CHUNK, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
        if (!base) return 0;
        /* UNWIND_INFO shared by all thunks: version 1, prolog 4 bytes, one code:
         * UWOP_ALLOC_SMALL of 0x38 at offset 4, so stack walks through a thunk work. */
        static const uint8_t unwind[8] = {0x01, 0x04, 0x01, 0x00, 0x04, 0x62, 0x00, 0x00};
        memcpy(base, unwind, sizeof unwind);
        RUNTIME_FUNCTION *table = (RUNTIME_FUNCTION *)(base + THUNK_TABLE_OFFSET);
        uint64_t target = (uint64_t)(uintptr_t)record_completion;
        for (unsigned i = 0; i < THUNKS_PER_CHUNK; i++) {
            uint8_t *t = base + THUNK_CODE_OFFSET + i * THUNK_SIZE;
            uint64_t self = (uint64_t)(uintptr_t)t;
            uint8_t code[THUNK_SIZE] = {
                0x48, 0x83, 0xEC, 0x38,                          /* sub rsp, 0x38       */
                0x48, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0,              /* mov rax, self       */
                0x48, 0x89, 0x44, 0x24, 0x20,                    /* mov [rsp+0x20], rax */
                0x48, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0,              /* mov rax, target     */
                0xFF, 0xD0,                                      /* call rax            */
                0x48, 0x83, 0xC4, 0x38,                          /* add rsp, 0x38       */
                0xC3,                                            /* ret                 */
            };
            memcpy(code + 6, &self, 8);
            memcpy(code + 21, &target, 8);
            memset(code + 36, 0xCC, THUNK_SIZE - 36);
            memcpy(t, code, THUNK_SIZE);
            table[i].BeginAddress = (DWORD)(t - base);
            table[i].EndAddress = (DWORD)(t - base + 36);
            table[i].UnwindData = 0;
        }
        DWORD old;
        if (!VirtualProtect(base, THUNK_CHUNK, PAGE_EXECUTE_READ, &old)) return 0;
        FlushInstructionCache(GetCurrentProcess(), base, THUNK_CHUNK);
        RtlAddFunctionTable(table, THUNKS_PER_CHUNK, (DWORD64)(uintptr_t)base);
        thunk_chunk = base;
        thunks_used = 0;
    }
    return (uint64_t)(uintptr_t)(thunk_chunk + THUNK_CODE_OFFSET + (thunks_used++) * THUNK_SIZE);
}

/* ------------------------------------------------------------------------ */
/* Workers                                                                  */

static struct worker *workers;     /* touched by the reader thread only */
static uint32_t next_tag = 1;

static struct worker *find_worker(uint32_t tag)
{
    for (struct worker *w = workers; w; w = w->next)
        if (w->tag == tag) return w;
    return NULL;
}

/* The thread stops counting as busy before its answer is written: once the
 * client has the answer it may end the thread, and must not be refused. */
static void idle(struct worker *w) { InterlockedDecrement(&w->busy); }

static void run_call(struct worker *w, struct job *job)
{
    struct in in = {job->body, job->len, 0};
    uint64_t fn = get_u64(&in);
    uint8_t nargs = get_u8(&in);
    uint64_t a[MAX_ARGS] = {0};
    if (nargs > MAX_ARGS) {
        idle(w);
        reply_error(job->id, w->tag, job->op, "CALL with %u arguments; at most %u", nargs, MAX_ARGS);
        return;
    }
    for (unsigned i = 0; i < nargs; i++) a[i] = get_u64(&in);
    if (in.bad || in.left) {
        idle(w);
        reply_error(job->id, w->tag, job->op, "malformed CALL request (%zu bytes)", job->len);
        return;
    }
    if (!is_callable(fn)) {
        idle(w);
        reply_error(job->id, w->tag, job->op, "0x%llx is not a function this agent resolved or saw written by "
                    "SIO_GET_EXTENSION_FUNCTION_POINTER", (unsigned long long)fn);
        return;
    }
    w->n_done = 0;
    w->lost = 0;
    uint64_t rax = 0;
    SetLastError(w->last_error);
    int faulted = guarded_call(&w->guard, (fn_t)(uintptr_t)fn, a, &rax);
    w->last_error = GetLastError();

    /* Remember extension pointers the call wrote, so the client may call them. */
    uint64_t learned = 0;
    const char *learned_name = NULL;
    if (!faulted && fn == addr_WSAIoctl && (uint32_t)a[1] == SIO_GET_EXTENSION_FUNCTION_POINTER
            && (int32_t)rax == 0 && (uint32_t)a[3] >= sizeof(GUID) && (uint32_t)a[5] >= 8 && a[2] && a[4]) {
        GUID guid;
        uint64_t ptr;
        if (!guarded_copy(&w->guard, &guid, (void *)(uintptr_t)a[2], sizeof guid)
                && !guarded_copy(&w->guard, &ptr, (void *)(uintptr_t)a[4], 8)
                && (learned_name = extension_name(&guid)) && ptr) {
            if (!is_callable(ptr)) add_callable(ptr, learned_name);
            learned = ptr;
        }
    }

    struct out o = {0};
    begin(&o);
    put_u64(&o, rax);
    put_u32(&o, w->last_error);
    put_u32(&o, faulted ? w->guard.code : 0);
    put_u64(&o, faulted ? w->guard.address : 0);
    put_u64(&o, faulted ? w->guard.info0 : 0);
    put_u64(&o, faulted ? w->guard.info1 : 0);
    put_u32(&o, w->n_done);
    put_u32(&o, w->lost);
    if (w->n_done) put(&o, w->done, w->n_done * sizeof *w->done);
    put_u64(&o, learned);
    put_str8(&o, learned ? learned_name : "");
    idle(w);
    send_frame(&o, job->id, w->tag, job->op, ST_OK);
    free(o.p);
}

static DWORD WINAPI worker_main(void *arg)
{
    struct worker *w = arg;
    TlsSetValue(tls_guard, &w->guard);
    TlsSetValue(tls_worker, w);
    for (;;) {
        struct job *job;
        EnterCriticalSection(&w->lock);
        while (!(job = w->head))                        /* not alertable: APCs run only inside calls */
            SleepConditionVariableCS(&w->wake, &w->lock, INFINITE);
        w->head = job->next;
        if (!w->head) w->tail = NULL;
        LeaveCriticalSection(&w->lock);
        if (job->op == OP_END_THREAD) {
            free(job);
            InterlockedDecrement(&w->busy);
            return 0;
        }
        run_call(w, job);                               /* marks the thread idle before answering */
        free(job);
    }
}

static void post(struct worker *w, struct job *job)
{
    InterlockedIncrement(&w->busy);
    job->next = NULL;
    EnterCriticalSection(&w->lock);
    if (w->tail) w->tail->next = job; else w->head = job;
    w->tail = job;
    LeaveCriticalSection(&w->lock);
    WakeConditionVariable(&w->wake);
}

static void op_new_thread(uint32_t id, uint16_t op)
{
    struct worker *w = calloc(1, sizeof *w);
    if (!w) die("out of memory");
    w->tag = next_tag++;
    InitializeCriticalSection(&w->lock);
    InitializeConditionVariable(&w->wake);
    w->thread = CreateThread(NULL, 0, worker_main, w, 0, &w->tid);
    if (!w->thread) {
        DWORD err = GetLastError();
        DeleteCriticalSection(&w->lock);
        free(w);
        reply_error(id, 0, op, "CreateThread failed: error %lu", err);
        return;
    }
    w->next = workers;
    workers = w;
    struct out o = {0};
    begin(&o);
    put_u32(&o, w->tag);
    put_u32(&o, w->tid);
    put_u64(&o, (uint64_t)(uintptr_t)w->thread);
    send_frame(&o, id, 0, op, ST_OK);
    free(o.p);
}

static void op_end_thread(uint32_t id, uint16_t op, struct in *in)
{
    uint32_t tag = get_u32(in);
    struct worker **pw = &workers, *w;
    while ((w = *pw) && w->tag != tag) pw = &w->next;
    if (in->bad || !w) { reply_error(id, 0, op, "END_THREAD: no thread %u", tag); return; }
    if (w->busy) { reply_error(id, 0, op, "END_THREAD: thread %u has a call in progress", tag); return; }
    struct job *job = xmalloc(sizeof *job);
    job->op = OP_END_THREAD;
    job->id = id;
    job->len = 0;
    post(w, job);
    if (WaitForSingleObject(w->thread, 5000) != WAIT_OBJECT_0) {
        reply_error(id, 0, op, "END_THREAD: thread %u did not exit", tag);
        return;
    }
    *pw = w->next;
    CloseHandle(w->thread);
    DeleteCriticalSection(&w->lock);
    free(w->done);
    free(w);
    struct out o = {0};
    begin(&o);
    send_frame(&o, id, 0, op, ST_OK);
    free(o.p);
}

/* ------------------------------------------------------------------------ */
/* Memory: each allocation its own reservation, buffer at the end of its     */
/* committed pages (16-byte aligned), then a reserved, never committed guard */
/* page: the layout of harness.native.NativeMemory.                          */

struct region { uint64_t base, reserved, committed, start, size; uint8_t prot; };
static struct region *regions;
static size_t n_regions, cap_regions;
/* Bases the last RETIRE decommitted, still reserved (see op_retire). */
static uint64_t *retired;
static size_t n_retired, cap_retired;
static uint64_t invalid_range;
static struct guard reader_guard;
static DWORD page_size = 4096;

static DWORD win_prot(uint8_t prot)
{
    return prot == PROT_RW ? PAGE_READWRITE : prot == PROT_R ? PAGE_READONLY : PAGE_NOACCESS;
}

static struct region *region_of_start(uint64_t start)
{
    for (size_t i = 0; i < n_regions; i++)
        if (regions[i].start == start) return &regions[i];
    return NULL;
}

static struct region *region_of_range(uint64_t ptr, uint64_t n)
{
    for (size_t i = 0; i < n_regions; i++) {
        struct region *r = &regions[i];
        if (ptr >= r->start && ptr - r->start <= r->size && n <= r->size - (ptr - r->start)) return r;
    }
    return NULL;
}

static void reply_u64(uint32_t id, uint16_t op, uint64_t v)
{
    struct out o = {0};
    begin(&o);
    put_u64(&o, v);
    send_frame(&o, id, 0, op, ST_OK);
    free(o.p);
}

static void reply_ok(uint32_t id, uint16_t op) { struct out o = {0}; begin(&o); send_frame(&o, id, 0, op, ST_OK); free(o.p); }

static void op_alloc(uint32_t id, uint16_t op, struct in *in)
{
    uint64_t size = get_u64(in);
    uint8_t prot = get_u8(in);
    if (in->bad || prot > PROT_NONE || size > MAX_FRAME * 4ull) {
        reply_error(id, 0, op, "ALLOC: bad request (size %llu, prot %u)", (unsigned long long)size, prot);
        return;
    }
    uint64_t span = size < ALIGN ? ALIGN : (size + ALIGN - 1) / ALIGN * ALIGN;
    uint64_t committed = (span + page_size - 1) / page_size * page_size;
    uint64_t reserved = committed + page_size;
    uint8_t *base = VirtualAlloc(NULL, reserved, MEM_RESERVE, PAGE_NOACCESS);
    if (!base) {
        reply_error(id, 0, op, "VirtualAlloc(MEM_RESERVE, %llu) failed: error %lu (%zu allocations live, %zu retired)",
                    (unsigned long long)reserved, GetLastError(), n_regions, n_retired);
        return;
    }
    DWORD old;
    if (!VirtualAlloc(base, committed, MEM_COMMIT, PAGE_READWRITE)
            || (prot != PROT_RW && !VirtualProtect(base, committed, win_prot(prot), &old))) {
        DWORD err = GetLastError();
        VirtualFree(base, 0, MEM_RELEASE);
        reply_error(id, 0, op, "VirtualAlloc(MEM_COMMIT, %llu) failed: error %lu (%zu allocations live, %zu retired)",
                    (unsigned long long)committed, err, n_regions, n_retired);
        return;
    }
    if (n_regions == cap_regions) {
        cap_regions = cap_regions ? cap_regions * 2 : 256;
        struct region *p = realloc(regions, cap_regions * sizeof *p);
        if (!p) die("out of memory");
        regions = p;
    }
    struct region *r = &regions[n_regions++];
    r->base = (uint64_t)(uintptr_t)base;
    r->reserved = reserved;
    r->committed = committed;
    r->start = r->base + committed - span;
    r->size = size;
    r->prot = prot;
    reply_u64(id, op, r->start);
}

static void drop_region(struct region *r) { *r = regions[--n_regions]; }

static void op_free(uint32_t id, uint16_t op, struct in *in)
{
    uint64_t start = get_u64(in);
    struct region *r = in->bad ? NULL : region_of_start(start);
    if (!r) { reply_error(id, 0, op, "FREE of 0x%llx: not the start of an allocation", (unsigned long long)start); return; }
    if (!VirtualFree((void *)(uintptr_t)r->base, 0, MEM_RELEASE)) {
        reply_error(id, 0, op, "VirtualFree(0x%llx, MEM_RELEASE) failed: %lu", (unsigned long long)r->base, GetLastError());
        return;
    }
    drop_region(r);
    reply_ok(id, op);
}

/* RETIRE (a client closing): decommit every listed allocation but keep its
 * range reserved, so a late write of an aborted overlapped operation faults
 * instead of landing in a later allocation. The ranges stay reserved until the
 * next RETIRE (a whole client later) and are released then: under Wine each
 * reservation is two Linux mappings, and keeping every one would exhaust
 * vm.max_map_count (65530), after which VirtualAlloc fails with error 5.
 * Unknown starts are skipped and counted in the reply. */
static void op_retire(uint32_t id, uint16_t op, struct in *in)
{
    uint32_t count = get_u32(in), unknown = 0;
    if (in->bad || in->left != (size_t)count * 8) { reply_error(id, 0, op, "malformed RETIRE request"); return; }
    for (size_t i = 0; i < n_retired; i++)
        VirtualFree((void *)(uintptr_t)retired[i], 0, MEM_RELEASE);
    n_retired = 0;
    if (count > cap_retired) {
        uint64_t *p = realloc(retired, (size_t)count * sizeof *p);
        if (!p) die("out of memory");
        retired = p;
        cap_retired = count;
    }
    for (uint32_t i = 0; i < count; i++) {
        struct region *r = region_of_start(get_u64(in));
        if (!r) { unknown++; continue; }
        VirtualFree((void *)(uintptr_t)r->base, r->committed, MEM_DECOMMIT);
        retired[n_retired++] = r->base;
        drop_region(r);
    }
    reply_u64(id, op, unknown);
}

static void op_protect(uint32_t id, uint16_t op, struct in *in)
{
    uint64_t start = get_u64(in);
    uint8_t prot = get_u8(in);
    struct region *r = in->bad ? NULL : region_of_start(start);
    if (!r || prot > PROT_NONE) { reply_error(id, 0, op, "PROTECT of 0x%llx: not the start of an allocation", (unsigned long long)start); return; }
    DWORD old;
    if (!VirtualProtect((void *)(uintptr_t)r->base, r->committed, win_prot(prot), &old)) {
        reply_error(id, 0, op, "VirtualProtect failed: %lu", GetLastError());
        return;
    }
    r->prot = prot;
    reply_ok(id, op);
}

/* Copy into or out of an allocation whatever its protection (lifted for the
 * copy, as a debugger would). Returns 0 on success. */
static int region_copy(struct region *r, void *dst, const void *src, size_t n, int writing)
{
    DWORD old;
    uint8_t need = writing ? PROT_RW : PROT_R;
    int lift = writing ? r->prot != PROT_RW : r->prot == PROT_NONE;
    if (lift && !VirtualProtect((void *)(uintptr_t)r->base, r->committed, win_prot(need), &old)) return -1;
    int rc = guarded_copy(&reader_guard, dst, src, n);
    if (lift) VirtualProtect((void *)(uintptr_t)r->base, r->committed, win_prot(r->prot), &old);
    return rc;
}

static void op_read(uint32_t id, uint16_t op, struct in *in)
{
    uint64_t ptr = get_u64(in);
    uint32_t n = get_u32(in);
    struct region *r = in->bad ? NULL : region_of_range(ptr, n);
    if (!r || n > MAX_FRAME - 64) { reply_error(id, 0, op, "READ of %u bytes at 0x%llx: not inside an allocation", n, (unsigned long long)ptr); return; }
    struct out o = {0};
    begin(&o);
    out_reserve(&o, n);
    if (region_copy(r, o.p + o.len, (void *)(uintptr_t)ptr, n, 0)) {
        free(o.p);
        reply_error(id, 0, op, "READ of %u bytes at 0x%llx faulted", n, (unsigned long long)ptr);
        return;
    }
    o.len += n;
    send_frame(&o, id, 0, op, ST_OK);
    free(o.p);
}

static void op_write(uint32_t id, uint16_t op, struct in *in)
{
    uint64_t ptr = get_u64(in);
    size_t n = in->left;
    struct region *r = in->bad ? NULL : region_of_range(ptr, n);
    if (!r) { reply_error(id, 0, op, "WRITE of %zu bytes at 0x%llx: not inside an allocation", n, (unsigned long long)ptr); return; }
    if (n && region_copy(r, (void *)(uintptr_t)ptr, in->p, n, 1)) {
        reply_error(id, 0, op, "WRITE of %zu bytes at 0x%llx faulted", n, (unsigned long long)ptr);
        return;
    }
    reply_ok(id, op);
}

static void op_invalid(uint32_t id, uint16_t op)
{
    /* Reserved, never committed: every access faults, for the whole agent's life. */
    if (!invalid_range)
        invalid_range = (uint64_t)(uintptr_t)VirtualAlloc(NULL, 16 * page_size, MEM_RESERVE, PAGE_NOACCESS);
    if (!invalid_range) { reply_error(id, 0, op, "VirtualAlloc(MEM_RESERVE) failed: %lu", GetLastError()); return; }
    reply_u64(id, op, invalid_range);
}

/* ------------------------------------------------------------------------ */
/* Resolve, hello                                                           */

static void op_resolve(uint32_t id, uint16_t op, struct in *in)
{
    uint32_t count = get_u32(in);
    struct out o = {0};
    begin(&o);
    for (uint32_t i = 0; i < count && !in->bad; i++) {
        char dll[64], name[128];
        get_str8(in, dll, sizeof dll);
        get_str8(in, name, sizeof name);
        if (in->bad) break;
        HMODULE m = GetModuleHandleA(dll);
        if (!m) m = LoadLibraryA(dll);
        FARPROC f = m ? GetProcAddress(m, name) : NULL;
        uint64_t ptr = (uint64_t)(uintptr_t)f;
        if (ptr) add_callable(ptr, name);
        put_u64(&o, ptr);
    }
    if (in->bad) { free(o.p); reply_error(id, 0, op, "malformed RESOLVE request"); return; }
    send_frame(&o, id, 0, op, ST_OK);
    free(o.p);
}

static int elevated(void)
{
    HANDLE token;
    TOKEN_ELEVATION e = {0};
    DWORD n = 0;
    if (!OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &token)) return 0;
    BOOL ok = GetTokenInformation(token, TokenElevation, &e, sizeof e, &n);
    CloseHandle(token);
    return ok && e.TokenIsElevated;
}

static void send_hello(void)
{
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    OSVERSIONINFOW v;
    memset(&v, 0, sizeof v);
    v.dwOSVersionInfoSize = sizeof v;
    /* GetVersionExW lies without a manifest; RtlGetVersion does not. */
    typedef LONG (WINAPI *rtl_get_version_t)(OSVERSIONINFOW *);
    typedef const char *(CDECL *wine_get_version_t)(void);
    HMODULE ntdll = GetModuleHandleA("ntdll");
    rtl_get_version_t rtl_get_version = (rtl_get_version_t)(void (*)(void))GetProcAddress(ntdll, "RtlGetVersion");
    if (rtl_get_version) rtl_get_version(&v);
    wine_get_version_t wine_version = (wine_get_version_t)(void (*)(void))GetProcAddress(ntdll, "wine_get_version");
    char os[128];
    snprintf(os, sizeof os, "Windows %lu.%lu.%lu%s%s", v.dwMajorVersion, v.dwMinorVersion, v.dwBuildNumber,
             wine_version ? " (Wine " : "", wine_version ? wine_version() : "");
    if (wine_version) strncat(os, ")", sizeof os - strlen(os) - 1);

    struct out o = {0};
    begin(&o);
    put(&o, HELLO_MAGIC, 4);
    put_u32(&o, PROTOCOL_VERSION);
    put_u32(&o, GetCurrentProcessId());
    put_u32(&o, si.dwPageSize);
    put_u32(&o, si.dwAllocationGranularity);
    put_u32(&o, MAX_FRAME);
    put_u32(&o, MAX_ARGS);
    put_u32(&o, (uint32_t)elevated());
    put_str8(&o, AGENT_BUILD_ID);
    put_str8(&o, os);
    put_u32(&o, N_EXTENSIONS);
    for (size_t i = 0; i < N_EXTENSIONS; i++) {
        put_u64(&o, known_extension[i]);
        put_str8(&o, extensions[i].name);
    }
    send_frame(&o, 0, 0, OP_HELLO, ST_OK);
    free(o.p);
}

/* ------------------------------------------------------------------------ */

int main(void)
{
    _setmode(_fileno(stdin), _O_BINARY);
    _setmode(_fileno(stdout), _O_BINARY);
    in_h = GetStdHandle(STD_INPUT_HANDLE);
    out_h = GetStdHandle(STD_OUTPUT_HANDLE);
    InitializeCriticalSection(&out_lock);
    tls_guard = TlsAlloc();
    tls_worker = TlsAlloc();
    if (tls_guard == TLS_OUT_OF_INDEXES || tls_worker == TLS_OUT_OF_INDEXES) die("TlsAlloc failed");
    TlsSetValue(tls_guard, &reader_guard);
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    page_size = si.dwPageSize;
    /* Faults are reported by guarded_call; never let Windows show a dialog. */
    SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX | SEM_NOOPENFILEERRORBOX);
    addr_WSAIoctl = (uint64_t)(uintptr_t)GetProcAddress(GetModuleHandleA("ws2_32"), "WSAIoctl");
    learn_extensions();
    send_hello();

    for (;;) {
        uint32_t len;
        if (!read_exact(&len, 4)) break;                  /* EOF: the client is gone */
        if (len < REQUEST_HEADER || len > MAX_FRAME)
            die("protocol error: request frame of %u bytes (limits %u..%u)", len, REQUEST_HEADER, MAX_FRAME);
        struct job *job = xmalloc(sizeof *job + len);
        if (!read_exact(job->body, len)) break;
        uint32_t tag;
        uint16_t op;
        memcpy(&job->id, job->body, 4);
        memcpy(&tag, job->body + 4, 4);
        memcpy(&op, job->body + 8, 2);
        job->op = op;
        job->len = len - REQUEST_HEADER;
        memmove(job->body, job->body + REQUEST_HEADER, job->len);
        struct in in = {job->body, job->len, 0};
        uint32_t id = job->id;

        if (op == OP_CALL) {
            struct worker *w = find_worker(tag);
            if (!w) { reply_error(id, tag, op, "CALL on unknown thread %u", tag); free(job); continue; }
            post(w, job);                                  /* the worker frees it */
            continue;
        }
        switch (op) {
        case OP_PING: reply_ok(id, op); break;
        case OP_RESOLVE: op_resolve(id, op, &in); break;
        case OP_NEW_THREAD: op_new_thread(id, op); break;
        case OP_END_THREAD: op_end_thread(id, op, &in); break;
        case OP_ROUTINE: {
            uint64_t t = new_thunk();
            if (t) reply_u64(id, op, t); else reply_error(id, 0, op, "cannot allocate a trampoline: %lu", GetLastError());
            break;
        }
        case OP_ALLOC: op_alloc(id, op, &in); break;
        case OP_FREE: op_free(id, op, &in); break;
        case OP_RETIRE: op_retire(id, op, &in); break;
        case OP_PROTECT: op_protect(id, op, &in); break;
        case OP_READ: op_read(id, op, &in); break;
        case OP_WRITE: op_write(id, op, &in); break;
        case OP_INVALID: op_invalid(id, op); break;
        case OP_EXIT:
            reply_ok(id, op);
            TerminateProcess(GetCurrentProcess(), 0);
            break;
        default:
            reply_error(id, tag, op, "unknown operation %u", op);
        }
        free(job);
    }
    TerminateProcess(GetCurrentProcess(), 0);
    return 0;
}
