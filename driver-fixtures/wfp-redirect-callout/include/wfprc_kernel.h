/*
 * wfprc_kernel.h - driver-internal declarations of the sample WFP
 * connect-redirect callout (WDM, non-PnP).
 *
 * Header selection: the WDK build uses the real <fwpsk.h>/<fwpmk.h>. The
 * CI syntax check (mingw-w64 headers, no fwpsk.h) defines nothing special:
 * __MINGW64_VERSION_MAJOR (set by mingw's headers) selects
 * fwps_prototypes.h. WFPRC_USE_FWPS_PROTOTYPES forces it.
 */
#ifndef WFPRC_KERNEL_H
#define WFPRC_KERNEL_H

#include <ntddk.h>
#include <wdmsec.h>

#if defined(WFPRC_USE_FWPS_PROTOTYPES) || defined(__MINGW64_VERSION_MAJOR)
#include "fwps_prototypes.h"
#else
#pragma warning(push)
#pragma warning(disable: 4201)      /* nameless struct/union in fwpsk.h */
#define NDIS630 1                   /* Windows 8+ NDIS: FWPS_INCOMING_METADATA_VALUES0 vSwitch members */
#include <ndis.h>
#include <fwpsk.h>
#pragma warning(pop)
#include <fwpmk.h>
#endif

#include "wfp_redirect_callout.h"

/* ExAllocatePool2 (Windows 10 2004+) unless told otherwise. */
#ifndef WFPRC_USE_POOL2
#if defined(POOL_FLAG_NON_PAGED)
#define WFPRC_USE_POOL2 1
#else
#define WFPRC_USE_POOL2 0
#endif
#endif

#define WFPRC_POOL_TAG  'crfW'      /* "Wfrc" in pool dumps */

#define WFPRC_LOG(level, fmt, ...) \
    DbgPrintEx(DPFLTR_IHVNETWORK_ID, (level), "wfprc: " fmt "\n", __VA_ARGS__)

/* Policy as the driver holds it; same rules as POLICY.md and
 * harness/sample_driver.py. Arrays are sorted ascending. */
typedef struct WFPRC_POLICY_ {
    BOOLEAN enabled;
    ULONG proxyProcessId;
    USHORT tcpProxyPort;
    USHORT udpProxyPort;
    ULONG tcpPortCount;
    ULONG udpPortCount;
    ULONG excludedPidCount;
    USHORT tcpPorts[WFPRC_MAX_PORTS];
    USHORT udpPorts[WFPRC_MAX_PORTS];
    ULONG excludedPids[WFPRC_MAX_EXCLUDED_PIDS];
} WFPRC_POLICY;

/* What classify needs once a connection matched. */
typedef struct WFPRC_MATCH_ {
    ULONG proxyProcessId;
    USHORT proxyPort;
    ULONG generation;
} WFPRC_MATCH;

typedef struct WFPRC_GLOBALS_ {
    PDEVICE_OBJECT deviceObject;
    UNICODE_STRING parametersPath;      /* <service key>\Parameters */
    BOOLEAN symbolicLinkCreated;

    HANDLE engineHandle;                /* dynamic FWPM session, kept open */
    HANDLE redirectHandle;              /* FwpsRedirectHandleCreate0, once */
    UINT32 calloutIdV4;                 /* FWPS registration ids */
    UINT32 calloutIdV6;
    UINT64 filterIdV4;
    UINT64 filterIdV6;
    BOOLEAN wfpObjectsAdded;

    KSPIN_LOCK policyLock;              /* guards policy and generation */
    WFPRC_POLICY policy;
    ULONG generation;
} WFPRC_GLOBALS;

extern WFPRC_GLOBALS g_Wfprc;

/* policy.c */
_IRQL_requires_(PASSIVE_LEVEL)
NTSTATUS WfprcPolicyRead(_In_ PCUNICODE_STRING parametersPath, _Out_ WFPRC_POLICY* policy);
NTSTATUS WfprcPolicyValidate(_In_ const WFPRC_POLICY* policy);
_IRQL_requires_(PASSIVE_LEVEL)
NTSTATUS WfprcPolicyReload(_Out_opt_ WFPRC_RELOAD_RESULT* result);
_IRQL_requires_max_(DISPATCH_LEVEL)
BOOLEAN WfprcPolicyMatch(UINT8 protocol, USHORT remotePort, UINT64 processId, _Out_ WFPRC_MATCH* match);

/* wfp_setup.c */
_IRQL_requires_(PASSIVE_LEVEL)
NTSTATUS WfprcWfpSetup(_In_ PDEVICE_OBJECT deviceObject);
_IRQL_requires_(PASSIVE_LEVEL)
VOID WfprcWfpTeardown(VOID);

/* classify.c */
VOID NTAPI WfprcClassify(
    _In_ const FWPS_INCOMING_VALUES0* inFixedValues,
    _In_ const FWPS_INCOMING_METADATA_VALUES0* inMetaValues,
    _Inout_opt_ void* layerData,
    _In_opt_ const void* classifyContext,
    _In_ const FWPS_FILTER1* filter,
    _In_ UINT64 flowContext,
    _Inout_ FWPS_CLASSIFY_OUT0* classifyOut);
NTSTATUS NTAPI WfprcNotify(
    _In_ FWPS_CALLOUT_NOTIFY_TYPE notifyType,
    _In_ const GUID* filterKey,
    _Inout_ FWPS_FILTER1* filter);
VOID NTAPI WfprcFlowDelete(_In_ UINT16 layerId, _In_ UINT32 calloutId, _In_ UINT64 flowContext);

#endif /* WFPRC_KERNEL_H */
