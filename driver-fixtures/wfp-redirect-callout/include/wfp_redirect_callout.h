/*
 * wfp_redirect_callout.h - what the sample WFP redirect callout shares with
 * user mode (the proxy, tools, the Python contract module
 * harness/sample_driver.py).
 *
 * Include after the platform headers that define SOCKADDR_STORAGE, GUID,
 * DEFINE_GUID, CTL_CODE and C_ASSERT: in user mode <winsock2.h> and
 * <windows.h>; in the driver "wfprc_kernel.h" does it.
 *
 * tests/driver_fixtures checks every number and offset below against the
 * Python module, so change both together.
 */
#ifndef WFP_REDIRECT_CALLOUT_H
#define WFP_REDIRECT_CALLOUT_H

/* ---- service, device, IOCTL ------------------------------------------- */
#define WFPRC_SERVICE_NAME        L"WfpRedirectCallout"
#define WFPRC_DEVICE_NAME         L"\\Device\\WfpRedirectCallout"
#define WFPRC_DOS_DEVICE_NAME     L"\\DosDevices\\WfpRedirectCallout"
#define WFPRC_USER_DEVICE_PATH    L"\\\\.\\WfpRedirectCallout"

/* Vendor device types are 0x8000 and up (winioctl.h). */
#define FILE_DEVICE_WFPRC         0x8A57

/* Re-read the Parameters key. No input. Output (optional): WFPRC_RELOAD_RESULT.
 * An invalid policy fails with STATUS_INVALID_PARAMETER
 * (ERROR_INVALID_PARAMETER) and the previous policy stays in force. */
#define IOCTL_WFPRC_RELOAD_POLICY \
    CTL_CODE(FILE_DEVICE_WFPRC, 0x801, METHOD_BUFFERED, FILE_WRITE_ACCESS)

typedef struct WFPRC_RELOAD_RESULT_ {
    UINT32 generation;          /* bumped on every successful load */
    UINT32 proxyProcessId;
    UINT32 tcpPortCount;
    UINT32 udpPortCount;
} WFPRC_RELOAD_RESULT;

/* ---- policy (POLICY.md) --------------------------------------------------- */
#define WFPRC_POLICY_VERSION      1
#define WFPRC_MAX_PORTS           64    /* per protocol */
#define WFPRC_MAX_EXCLUDED_PIDS   32

#define WFPRC_VALUE_POLICY_VERSION        L"PolicyVersion"        /* REG_DWORD, default 1 */
#define WFPRC_VALUE_ENABLED               L"Enabled"              /* REG_DWORD 0/1, default 1 */
#define WFPRC_VALUE_TCP_PORTS             L"TcpPorts"             /* REG_MULTI_SZ, default empty */
#define WFPRC_VALUE_UDP_PORTS             L"UdpPorts"             /* REG_MULTI_SZ, default empty */
#define WFPRC_VALUE_TCP_PROXY_PORT        L"TcpProxyPort"         /* REG_DWORD, default 0 */
#define WFPRC_VALUE_UDP_PROXY_PORT        L"UdpProxyPort"         /* REG_DWORD, default 0 */
#define WFPRC_VALUE_PROXY_PROCESS_ID      L"ProxyProcessId"       /* REG_DWORD, default 0 */
#define WFPRC_VALUE_EXCLUDED_PROCESS_IDS  L"ExcludedProcessIds"   /* REG_MULTI_SZ, default empty */

/* ---- redirect context ------------------------------------------------------
 * Attached to every connection the driver redirects (localRedirectContext;
 * WFP frees it). The proxy reads it with
 * SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT (TCP) or the
 * IP_WFP_REDIRECT_CONTEXT / IPV6_WFP_REDIRECT_CONTEXT cmsg (UDP).
 * The two SOCKADDR_STORAGEs follow WFPSampler's layout (docs/facts.md §5.6). */
#define WFPRC_CONTEXT_MAGIC       0x58435257u   /* "WRCX" in memory */
#define WFPRC_CONTEXT_VERSION     1

typedef struct WFPRC_REDIRECT_CONTEXT_ {
    UINT32 magic;                       /* WFPRC_CONTEXT_MAGIC */
    UINT16 version;                     /* WFPRC_CONTEXT_VERSION */
    UINT16 size;                        /* sizeof(WFPRC_REDIRECT_CONTEXT) */
    SOCKADDR_STORAGE originalRemote;    /* destination the application asked for */
    SOCKADDR_STORAGE originalLocal;     /* its local address/port at connect time */
    UINT64 processId;                   /* connecting process (metadata processId) */
    UINT32 policyGeneration;            /* policy generation that chose to redirect */
    UINT8  protocol;                    /* IPPROTO_TCP or IPPROTO_UDP */
    UINT8  reserved[3];                 /* zero */
} WFPRC_REDIRECT_CONTEXT;

#define WFPRC_CONTEXT_SIZE        280
C_ASSERT(sizeof(WFPRC_REDIRECT_CONTEXT) == WFPRC_CONTEXT_SIZE);

/* ---- WFP object keys (stable: tools and tests look them up) --------------- */
/* 5f0c7a1e-3d52-4b8e-9c61-2a7b9e4d1f30 */
DEFINE_GUID(WFPRC_PROVIDER_KEY, 0x5f0c7a1e, 0x3d52, 0x4b8e, 0x9c, 0x61, 0x2a, 0x7b, 0x9e, 0x4d, 0x1f, 0x30);
/* 8a3e6b2d-71c4-4f09-b5d8-0e9c2f6a4b17 */
DEFINE_GUID(WFPRC_SUBLAYER_KEY, 0x8a3e6b2d, 0x71c4, 0x4f09, 0xb5, 0xd8, 0x0e, 0x9c, 0x2f, 0x6a, 0x4b, 0x17);
/* c2d41f8b-5a6e-4c3d-9f27-7b1e0a8d6c52 */
DEFINE_GUID(WFPRC_CALLOUT_V4_KEY, 0xc2d41f8b, 0x5a6e, 0x4c3d, 0x9f, 0x27, 0x7b, 0x1e, 0x0a, 0x8d, 0x6c, 0x52);
/* d7e59a3c-6b8f-4d1e-a038-8c2f1b9e7d63 */
DEFINE_GUID(WFPRC_CALLOUT_V6_KEY, 0xd7e59a3c, 0x6b8f, 0x4d1e, 0xa0, 0x38, 0x8c, 0x2f, 0x1b, 0x9e, 0x7d, 0x63);
/* 1b6f3e9a-0c7d-4a52-8e14-3d9b7c2a5f86 */
DEFINE_GUID(WFPRC_FILTER_V4_KEY, 0x1b6f3e9a, 0x0c7d, 0x4a52, 0x8e, 0x14, 0x3d, 0x9b, 0x7c, 0x2a, 0x5f, 0x86);
/* 2c7a4f0b-1d8e-4b63-9f25-4e0c8d3b6a97 */
DEFINE_GUID(WFPRC_FILTER_V6_KEY, 0x2c7a4f0b, 0x1d8e, 0x4b63, 0x9f, 0x25, 0x4e, 0x0c, 0x8d, 0x3b, 0x6a, 0x97);

#define WFPRC_SUBLAYER_WEIGHT     0x7F00

#endif /* WFP_REDIRECT_CALLOUT_H */
