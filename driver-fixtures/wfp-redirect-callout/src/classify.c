/*
 * classify.c - the ALE_CONNECT_REDIRECT_V4/V6 classifyFn.
 *
 * The decision is the table in src/decision.c (include/wfprc_decision.h);
 * harness/sample_driver/decision.py is the same table in Python, compared
 * with this one by tests/driver_fixtures/test_decision_table.py. Order:
 *   1. no FWPS_RIGHT_ACTION_WRITE        -> return untouched (docs/facts.md §5.5)
 *   2. policy does not match             -> PERMIT
 *   3. redirect state (docs/facts.md §5.4):
 *        NOT_REDIRECTED, REDIRECTED_BY_OTHER -> may redirect
 *        REDIRECTED_BY_SELF                  -> PERMIT, no redirect
 *        PREVIOUSLY_REDIRECTED_BY_SELF       -> PERMIT, never redirect again
 *   4. acquire the writable layer data; reauthorization of a version our
 *      filter made                       -> PERMIT (WFPSampler, docs/facts.md §5.7)
 *   5. a foreign localRedirectHandle anywhere in the previousVersion chain
 *                                        -> PERMIT (HOWTO, docs/facts.md §5.5; EBPF)
 *   6. redirect to loopback:proxyPort for the proxy PID, with context.
 * Every acquire is matched by exactly one apply, even when nothing changed
 * (docs/facts.md §5.3).
 */
#include "wfprc_kernel.h"
#include "wfprc_decision.h"

C_ASSERT(FWPS_CONNECTION_NOT_REDIRECTED == WFPRC_STATE_NOT_REDIRECTED);
C_ASSERT(FWPS_CONNECTION_REDIRECTED_BY_SELF == WFPRC_STATE_REDIRECTED_BY_SELF);
C_ASSERT(FWPS_CONNECTION_REDIRECTED_BY_OTHER == WFPRC_STATE_REDIRECTED_BY_OTHER);
C_ASSERT(FWPS_CONNECTION_PREVIOUSLY_REDIRECTED_BY_SELF == WFPRC_STATE_PREVIOUSLY_REDIRECTED_BY_SELF);

typedef struct WFPRC_LAYER_FIELDS_ {
    UINT32 protocol;
    UINT32 remotePort;
    UINT32 flags;
} WFPRC_LAYER_FIELDS;

static const WFPRC_LAYER_FIELDS g_FieldsV4 = {
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_IP_PROTOCOL,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_IP_REMOTE_PORT,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_FLAGS,
};
static const WFPRC_LAYER_FIELDS g_FieldsV6 = {
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_IP_PROTOCOL,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_IP_REMOTE_PORT,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_FLAGS,
};

static VOID WfprcPermit(_Inout_ FWPS_CLASSIFY_OUT0* classifyOut, _In_ const FWPS_FILTER1* filter)
{
    classifyOut->actionType = FWP_ACTION_PERMIT;
    if (filter->flags & FWPS_FILTER_FLAG_CLEAR_ACTION_RIGHT) {
        classifyOut->rights &= ~FWPS_RIGHT_ACTION_WRITE;
    }
}

/* Step 5: has any earlier version been redirected locally by someone else? */
static BOOLEAN WfprcForeignLocalRedirect(_In_opt_ const FWPS_CONNECT_REQUEST0* version)
{
    for (; version != NULL; version = version->previousVersion) {
        if (version->localRedirectHandle != NULL &&
            version->localRedirectHandle != g_Wfprc.redirectHandle) {
            return TRUE;
        }
    }
    return FALSE;
}

static VOID WfprcSetLoopback(_Inout_ SOCKADDR_STORAGE* address, USHORT port)
{
    /* Keep the family of the layer (V4 or V6); rewrite address and port. */
    if (address->ss_family == AF_INET6) {
        SOCKADDR_IN6* in6 = (SOCKADDR_IN6*)address;
        RtlZeroMemory(&in6->sin6_addr, sizeof(in6->sin6_addr));
        ((UCHAR*)&in6->sin6_addr)[15] = 1;                  /* ::1 */
        in6->sin6_port = RtlUshortByteSwap(port);
        in6->sin6_flowinfo = 0;
        in6->sin6_scope_id = 0;
    } else {
        SOCKADDR_IN* in4 = (SOCKADDR_IN*)address;
        in4->sin_addr.s_addr = RtlUlongByteSwap(0x7F000001);   /* 127.0.0.1 */
        in4->sin_port = RtlUshortByteSwap(port);
    }
}

static WFPRC_REDIRECT_CONTEXT* WfprcNewContext(_In_ const FWPS_CONNECT_REQUEST0* request, UINT8 protocol,
                                              UINT64 processId, ULONG generation)
{
    WFPRC_REDIRECT_CONTEXT* context;

    /* Non-paged: classify can run at DISPATCH_LEVEL. WFP frees it with the
     * flow once it has been applied (docs/facts.md §5.2). */
#if WFPRC_USE_POOL2
    context = (WFPRC_REDIRECT_CONTEXT*)ExAllocatePool2(POOL_FLAG_NON_PAGED, sizeof(*context), WFPRC_POOL_TAG);
#else
    context = (WFPRC_REDIRECT_CONTEXT*)ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(*context), WFPRC_POOL_TAG);
    if (context != NULL) {
        RtlZeroMemory(context, sizeof(*context));
    }
#endif
    if (context == NULL) {
        return NULL;
    }
    context->magic = WFPRC_CONTEXT_MAGIC;
    context->version = WFPRC_CONTEXT_VERSION;
    context->size = (UINT16)sizeof(*context);
    context->originalRemote = request->remoteAddressAndPort;
    context->originalLocal = request->localAddressAndPort;
    context->processId = processId;
    context->policyGeneration = generation;
    context->protocol = protocol;
    return context;
}

VOID NTAPI WfprcClassify(
    _In_ const FWPS_INCOMING_VALUES0* inFixedValues,
    _In_ const FWPS_INCOMING_METADATA_VALUES0* inMetaValues,
    _Inout_opt_ void* layerData,
    _In_opt_ const void* classifyContext,
    _In_ const FWPS_FILTER1* filter,
    _In_ UINT64 flowContext,
    _Inout_ FWPS_CLASSIFY_OUT0* classifyOut)
{
    const WFPRC_LAYER_FIELDS* fields;
    FWPS_CONNECTION_REDIRECT_STATE state = FWPS_CONNECTION_NOT_REDIRECTED;
    FWPS_CONNECT_REQUEST0* writable = NULL;
    WFPRC_REDIRECT_CONTEXT* context;
    WFPRC_MATCH match = { 0 };
    UINT64 classifyHandle = 0;
    UINT64 processId = 0;
    UINT8 protocol = 0;
    USHORT remotePort = 0;
    BOOLEAN reauthorize = FALSE;
    BOOLEAN matched;
    BOOLEAN hasWriteRight;
    BOOLEAN hasLayerData;
    NTSTATUS status;

    UNREFERENCED_PARAMETER(flowContext);

    /* 1-3: the rights, the policy, the redirect state (src/decision.c). The
     * fields are read only with the write right and layer data, and the state
     * is queried only for a flow the policy matches. */
    matched = FALSE;
    hasWriteRight = (classifyOut->rights & FWPS_RIGHT_ACTION_WRITE) != 0;
    hasLayerData = layerData != NULL && classifyContext != NULL;
    if (hasWriteRight && hasLayerData) {
        fields = (inFixedValues->layerId == FWPS_LAYER_ALE_CONNECT_REDIRECT_V6) ? &g_FieldsV6 : &g_FieldsV4;
        protocol = inFixedValues->incomingValue[fields->protocol].value.uint8;
        remotePort = inFixedValues->incomingValue[fields->remotePort].value.uint16;
        reauthorize = (inFixedValues->incomingValue[fields->flags].value.uint32 &
                       FWP_CONDITION_FLAG_IS_REAUTHORIZE) != 0;
        if (FWPS_IS_METADATA_FIELD_PRESENT(inMetaValues, FWPS_METADATA_FIELD_PROCESS_ID)) {
            processId = inMetaValues->processId;
        }
        matched = WfprcPolicyMatch(protocol, remotePort, processId, &match);
        /* Without a records handle nobody has redirected this flow yet. */
        if (matched && FWPS_IS_METADATA_FIELD_PRESENT(inMetaValues, FWPS_METADATA_FIELD_REDIRECT_RECORD_HANDLE) &&
            inMetaValues->redirectRecords != NULL) {
            state = FwpsQueryConnectionRedirectState0(inMetaValues->redirectRecords,
                                                      g_Wfprc.redirectHandle, NULL);
        }
    }
    switch (WfprcDecideBeforeAcquire(hasWriteRight, hasLayerData, matched, (int)state)) {
    case WfprcDecisionLeave:
        return;
    case WfprcDecisionAcquire:
        break;
    default:
        WfprcPermit(classifyOut, filter);
        return;
    }

    /* 4. Writable copy; its previousVersion is the version we were given. */
    status = FwpsAcquireClassifyHandle0((void*)classifyContext, 0, &classifyHandle);
    if (!NT_SUCCESS(status)) {
        WFPRC_LOG(DPFLTR_ERROR_LEVEL, "FwpsAcquireClassifyHandle0 0x%08X", status);
        WfprcPermit(classifyOut, filter);
        return;
    }
    status = FwpsAcquireWritableLayerDataPointer0(classifyHandle, filter->filterId, 0,
                                                  (PVOID*)&writable, classifyOut);
    if (!NT_SUCCESS(status)) {
        /* Another callout holds the data; the acquire did not change rights. */
        WFPRC_LOG(DPFLTR_ERROR_LEVEL, "FwpsAcquireWritableLayerDataPointer0 0x%08X", status);
        FwpsReleaseClassifyHandle0(classifyHandle);
        WfprcPermit(classifyOut, filter);
        return;
    }

    /* The acquire set BLOCK and cleared the write right (docs/facts.md §5.3); every
     * "no redirect" exit below applies the unchanged data and restores both,
     * as WFPSampler does on reauthorization. Steps 4-5: src/decision.c. */
    if (WfprcDecideAfterAcquire(reauthorize,
                                writable->previousVersion != NULL &&
                                    writable->previousVersion->modifierFilterId == filter->filterId,
                                WfprcForeignLocalRedirect(writable->previousVersion)) != WfprcDecisionRedirect) {
        goto permit_unchanged;
    }

    /* 6. Redirect. */
    context = WfprcNewContext(writable, protocol, processId, match.generation);
    if (context == NULL) {
        WFPRC_LOG(DPFLTR_ERROR_LEVEL, "no memory for a redirect context%s", "");
        goto permit_unchanged;
    }
    WfprcSetLoopback(&writable->remoteAddressAndPort, match.proxyPort);
    writable->localRedirectTargetPID = match.proxyProcessId;
    writable->localRedirectHandle = g_Wfprc.redirectHandle;
    writable->localRedirectContext = context;               /* WFP owns it from here */
    writable->localRedirectContextSize = sizeof(*context);

    FwpsApplyModifiedLayerData0(classifyHandle, writable, 0);
    FwpsReleaseClassifyHandle0(classifyHandle);
    classifyOut->actionType = FWP_ACTION_PERMIT;
    return;

permit_unchanged:
    FwpsApplyModifiedLayerData0(classifyHandle, writable, 0);
    FwpsReleaseClassifyHandle0(classifyHandle);
    classifyOut->actionType = FWP_ACTION_PERMIT;
    classifyOut->rights |= FWPS_RIGHT_ACTION_WRITE;
}

NTSTATUS NTAPI WfprcNotify(
    _In_ FWPS_CALLOUT_NOTIFY_TYPE notifyType,
    _In_ const GUID* filterKey,
    _Inout_ FWPS_FILTER1* filter)
{
    UNREFERENCED_PARAMETER(notifyType);
    UNREFERENCED_PARAMETER(filterKey);
    UNREFERENCED_PARAMETER(filter);
    return STATUS_SUCCESS;
}

VOID NTAPI WfprcFlowDelete(_In_ UINT16 layerId, _In_ UINT32 calloutId, _In_ UINT64 flowContext)
{
    /* No flow contexts: the redirect context belongs to WFP, not to a flow
     * context of ours. */
    UNREFERENCED_PARAMETER(layerId);
    UNREFERENCED_PARAMETER(calloutId);
    UNREFERENCED_PARAMETER(flowContext);
}
