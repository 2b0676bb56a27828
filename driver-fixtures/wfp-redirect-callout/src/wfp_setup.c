/*
 * wfp_setup.c - add and remove everything this driver puts into WFP.
 *
 * Setup order: redirect handle (once; docs/facts.md §5.3 "create once and cache"),
 * FWPS callout registration, then in one FWPM transaction on a dynamic
 * session: provider, sublayer, FWPM callouts, filters. Teardown removes
 * them in reverse, then unregisters the callouts and destroys the handle.
 */
#include "wfprc_kernel.h"

static const FWP_ACTION_TYPE WFPRC_FILTER_ACTION = FWP_ACTION_CALLOUT_TERMINATING;

static NTSTATUS WfprcRegisterCallout(_In_ PDEVICE_OBJECT deviceObject, _In_ const GUID* key, _Out_ UINT32* id)
{
    FWPS_CALLOUT1 callout;

    /* Connect-redirect needs classifyFn1 or later (docs/facts.md §5.1). */
    RtlZeroMemory(&callout, sizeof(callout));
    callout.calloutKey = *key;
    callout.classifyFn = WfprcClassify;
    callout.notifyFn = WfprcNotify;
    callout.flowDeleteFn = WfprcFlowDelete;
    return FwpsCalloutRegister1(deviceObject, &callout, id);
}

static NTSTATUS WfprcAddCalloutAndFilter(_In_ const GUID* calloutKey, _In_ const GUID* filterKey,
                                         _In_ const GUID* layerKey, _In_ PWSTR name, _Out_ UINT64* filterId)
{
    FWPM_CALLOUT0 callout;
    FWPM_FILTER0 filter;
    FWPM_FILTER_CONDITION0 conditions[2];
    NTSTATUS status;

    RtlZeroMemory(&callout, sizeof(callout));
    callout.calloutKey = *calloutKey;
    callout.displayData.name = name;
    callout.displayData.description = L"Redirects policy-matched connects to the local proxy";
    callout.providerKey = (GUID*)&WFPRC_PROVIDER_KEY;
    callout.applicableLayer = *layerKey;
    status = FwpmCalloutAdd0(g_Wfprc.engineHandle, &callout, NULL, NULL);
    if (!NT_SUCCESS(status)) {
        return status;
    }

    /* Two conditions on the same field are ORed by the filter engine:
     * TCP or UDP. Ports stay out of the filter so a policy reload needs no
     * filter change; the callout matches ports itself. */
    RtlZeroMemory(conditions, sizeof(conditions));
    conditions[0].fieldKey = FWPM_CONDITION_IP_PROTOCOL;
    conditions[0].matchType = FWP_MATCH_EQUAL;
    conditions[0].conditionValue.type = FWP_UINT8;
    conditions[0].conditionValue.uint8 = IPPROTO_TCP;
    conditions[1] = conditions[0];
    conditions[1].conditionValue.uint8 = IPPROTO_UDP;

    RtlZeroMemory(&filter, sizeof(filter));
    filter.filterKey = *filterKey;
    filter.displayData.name = name;
    filter.displayData.description = L"Sample connect-redirect filter";
    filter.providerKey = (GUID*)&WFPRC_PROVIDER_KEY;
    filter.layerKey = *layerKey;
    filter.subLayerKey = WFPRC_SUBLAYER_KEY;
    filter.weight.type = FWP_EMPTY;     /* engine assigns the weight */
    filter.numFilterConditions = 2;
    filter.filterCondition = conditions;
    filter.action.type = WFPRC_FILTER_ACTION;
    filter.action.calloutKey = *calloutKey;
    return FwpmFilterAdd0(g_Wfprc.engineHandle, &filter, NULL, filterId);
}

_IRQL_requires_(PASSIVE_LEVEL)
NTSTATUS WfprcWfpSetup(_In_ PDEVICE_OBJECT deviceObject)
{
    FWPM_SESSION0 session;
    FWPM_PROVIDER0 provider;
    FWPM_SUBLAYER0 sublayer;
    NTSTATUS status;
    BOOLEAN inTransaction = FALSE;

    /* The handle identifies "self" in FwpsQueryConnectionRedirectState0
     * (docs/facts.md §5.4: judged per redirect handle). */
    status = FwpsRedirectHandleCreate0(&WFPRC_PROVIDER_KEY, 0, &g_Wfprc.redirectHandle);
    if (!NT_SUCCESS(status)) {
        WFPRC_LOG(DPFLTR_ERROR_LEVEL, "FwpsRedirectHandleCreate0 0x%08X", status);
        goto fail;
    }

    /* Register before the filters exist: a filter whose terminating callout
     * is not registered acts as BLOCK. */
    status = WfprcRegisterCallout(deviceObject, &WFPRC_CALLOUT_V4_KEY, &g_Wfprc.calloutIdV4);
    if (!NT_SUCCESS(status)) goto fail;
    status = WfprcRegisterCallout(deviceObject, &WFPRC_CALLOUT_V6_KEY, &g_Wfprc.calloutIdV6);
    if (!NT_SUCCESS(status)) goto fail;

    /* Dynamic session: if the driver dies without unloading, BFE drops the
     * objects with the session instead of keeping stale filters. */
    RtlZeroMemory(&session, sizeof(session));
    session.flags = FWPM_SESSION_FLAG_DYNAMIC;
    status = FwpmEngineOpen0(NULL, RPC_C_AUTHN_WINNT, NULL, &session, &g_Wfprc.engineHandle);
    if (!NT_SUCCESS(status)) {
        WFPRC_LOG(DPFLTR_ERROR_LEVEL, "FwpmEngineOpen0 0x%08X (is BFE running?)", status);
        goto fail;
    }

    status = FwpmTransactionBegin0(g_Wfprc.engineHandle, 0);
    if (!NT_SUCCESS(status)) goto fail;
    inTransaction = TRUE;

    RtlZeroMemory(&provider, sizeof(provider));
    provider.providerKey = WFPRC_PROVIDER_KEY;
    provider.displayData.name = L"WFP redirect callout (sample)";
    provider.displayData.description = L"wfp-redirect-harness sample driver";
    provider.serviceName = WFPRC_SERVICE_NAME;
    status = FwpmProviderAdd0(g_Wfprc.engineHandle, &provider, NULL);
    if (!NT_SUCCESS(status)) goto fail;

    RtlZeroMemory(&sublayer, sizeof(sublayer));
    sublayer.subLayerKey = WFPRC_SUBLAYER_KEY;
    sublayer.displayData.name = L"WFP redirect callout sublayer";
    sublayer.displayData.description = L"Holds the sample's connect-redirect filters";
    sublayer.providerKey = (GUID*)&WFPRC_PROVIDER_KEY;
    sublayer.weight = WFPRC_SUBLAYER_WEIGHT;
    status = FwpmSubLayerAdd0(g_Wfprc.engineHandle, &sublayer, NULL);
    if (!NT_SUCCESS(status)) goto fail;

    status = WfprcAddCalloutAndFilter(&WFPRC_CALLOUT_V4_KEY, &WFPRC_FILTER_V4_KEY,
                                      &FWPM_LAYER_ALE_CONNECT_REDIRECT_V4,
                                      L"WFP redirect callout (IPv4)", &g_Wfprc.filterIdV4);
    if (!NT_SUCCESS(status)) goto fail;
    status = WfprcAddCalloutAndFilter(&WFPRC_CALLOUT_V6_KEY, &WFPRC_FILTER_V6_KEY,
                                      &FWPM_LAYER_ALE_CONNECT_REDIRECT_V6,
                                      L"WFP redirect callout (IPv6)", &g_Wfprc.filterIdV6);
    if (!NT_SUCCESS(status)) goto fail;

    status = FwpmTransactionCommit0(g_Wfprc.engineHandle);
    inTransaction = FALSE;
    if (!NT_SUCCESS(status)) goto fail;
    g_Wfprc.wfpObjectsAdded = TRUE;
    return STATUS_SUCCESS;

fail:
    WFPRC_LOG(DPFLTR_ERROR_LEVEL, "WFP setup failed 0x%08X", status);
    if (inTransaction) {
        FwpmTransactionAbort0(g_Wfprc.engineHandle);    /* nothing of it was added */
    }
    WfprcWfpTeardown();
    return status;
}

static VOID WfprcLogDelete(PCSTR what, NTSTATUS status)
{
    if (!NT_SUCCESS(status)) {
        WFPRC_LOG(DPFLTR_WARNING_LEVEL, "removing %s: 0x%08X", what, status);
    }
}

_IRQL_requires_(PASSIVE_LEVEL)
VOID WfprcWfpTeardown(VOID)
{
    NTSTATUS status;

    if (g_Wfprc.engineHandle != NULL) {
        if (g_Wfprc.wfpObjectsAdded) {
            /* Reverse order of setup; one transaction so BFE never sees a
             * filter without its callout. */
            status = FwpmTransactionBegin0(g_Wfprc.engineHandle, 0);
            if (NT_SUCCESS(status)) {
                WfprcLogDelete("IPv4 filter", FwpmFilterDeleteById0(g_Wfprc.engineHandle, g_Wfprc.filterIdV4));
                WfprcLogDelete("IPv6 filter", FwpmFilterDeleteById0(g_Wfprc.engineHandle, g_Wfprc.filterIdV6));
                WfprcLogDelete("IPv4 callout", FwpmCalloutDeleteByKey0(g_Wfprc.engineHandle, &WFPRC_CALLOUT_V4_KEY));
                WfprcLogDelete("IPv6 callout", FwpmCalloutDeleteByKey0(g_Wfprc.engineHandle, &WFPRC_CALLOUT_V6_KEY));
                WfprcLogDelete("sublayer", FwpmSubLayerDeleteByKey0(g_Wfprc.engineHandle, &WFPRC_SUBLAYER_KEY));
                WfprcLogDelete("provider", FwpmProviderDeleteByKey0(g_Wfprc.engineHandle, &WFPRC_PROVIDER_KEY));
                WfprcLogDelete("commit", FwpmTransactionCommit0(g_Wfprc.engineHandle));
            } else {
                WfprcLogDelete("transaction", status);
            }
            g_Wfprc.wfpObjectsAdded = FALSE;
        }
        /* Closing the dynamic session removes anything still left. */
        FwpmEngineClose0(g_Wfprc.engineHandle);
        g_Wfprc.engineHandle = NULL;
    }
    if (g_Wfprc.calloutIdV4 != 0) {
        WfprcLogDelete("IPv4 registration", FwpsCalloutUnregisterById0(g_Wfprc.calloutIdV4));
        g_Wfprc.calloutIdV4 = 0;
    }
    if (g_Wfprc.calloutIdV6 != 0) {
        WfprcLogDelete("IPv6 registration", FwpsCalloutUnregisterById0(g_Wfprc.calloutIdV6));
        g_Wfprc.calloutIdV6 = 0;
    }
    if (g_Wfprc.redirectHandle != NULL) {
        FwpsRedirectHandleDestroy0(g_Wfprc.redirectHandle);
        g_Wfprc.redirectHandle = NULL;
    }
}
