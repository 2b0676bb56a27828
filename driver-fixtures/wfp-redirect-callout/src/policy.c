/*
 * policy.c - read, validate and match the redirect policy (POLICY.md).
 *
 * The rules here and in harness/sample_driver.py are one format:
 * a value that Python rejects is rejected here, with the same reason.
 */
#include "wfprc_kernel.h"

/* Largest REG_MULTI_SZ we accept: MAX entries of 10 digits + NUL, + final NUL. */
#define WFPRC_MAX_MULTI_SZ_BYTES ((WFPRC_MAX_PORTS * 11 + 1) * sizeof(WCHAR))
#define WFPRC_VALUE_BUFFER_BYTES \
    (FIELD_OFFSET(KEY_VALUE_PARTIAL_INFORMATION, Data) + WFPRC_MAX_MULTI_SZ_BYTES)

typedef struct WFPRC_VALUE_BUFFER_ {
    KEY_VALUE_PARTIAL_INFORMATION info;
    UCHAR data[WFPRC_VALUE_BUFFER_BYTES];
} WFPRC_VALUE_BUFFER;

/* Query one value. STATUS_OBJECT_NAME_NOT_FOUND means "use the default". */
static NTSTATUS WfprcQueryValue(_In_ HANDLE key, _In_ PCWSTR name, _Out_ WFPRC_VALUE_BUFFER* buffer)
{
    UNICODE_STRING valueName;
    ULONG resultLength = 0;
    NTSTATUS status;

    RtlInitUnicodeString(&valueName, name);
    status = ZwQueryValueKey(key, &valueName, KeyValuePartialInformation, buffer,
                             sizeof(*buffer), &resultLength);
    if (status == STATUS_BUFFER_OVERFLOW || status == STATUS_BUFFER_TOO_SMALL) {
        WFPRC_LOG(DPFLTR_ERROR_LEVEL, "%ws: value too large", name);
        return STATUS_INVALID_PARAMETER;
    }
    return status;
}

static NTSTATUS WfprcReadDword(_In_ HANDLE key, _In_ PCWSTR name, ULONG defaultValue,
                               _Out_ ULONG* value, _Inout_ WFPRC_VALUE_BUFFER* buffer)
{
    NTSTATUS status = WfprcQueryValue(key, name, buffer);

    if (status == STATUS_OBJECT_NAME_NOT_FOUND) {
        *value = defaultValue;
        return STATUS_SUCCESS;
    }
    if (!NT_SUCCESS(status)) {
        return status;
    }
    if (buffer->info.Type != REG_DWORD || buffer->info.DataLength != sizeof(ULONG)) {
        WFPRC_LOG(DPFLTR_ERROR_LEVEL, "%ws: expected REG_DWORD", name);
        return STATUS_INVALID_PARAMETER;
    }
    RtlCopyMemory(value, buffer->info.Data, sizeof(ULONG));
    return STATUS_SUCCESS;
}

/* Parse a REG_MULTI_SZ of canonical decimals (no sign, blanks or leading
 * zeros) in 1..maxValue, no duplicates, at most maxCount; sorted out. The
 * walk stops at the first empty string or at the end of the data. */
static NTSTATUS WfprcReadNumberList(_In_ HANDLE key, _In_ PCWSTR name, ULONG maxValue, ULONG maxCount,
                                    _Out_writes_(maxCount) ULONG* numbers, _Out_ ULONG* count,
                                    _Inout_ WFPRC_VALUE_BUFFER* buffer)
{
    NTSTATUS status = WfprcQueryValue(key, name, buffer);
    const WCHAR* chars;
    ULONG nChars, i, n = 0;

    *count = 0;
    if (status == STATUS_OBJECT_NAME_NOT_FOUND) {
        return STATUS_SUCCESS;
    }
    if (!NT_SUCCESS(status)) {
        return status;
    }
    if (buffer->info.Type != REG_MULTI_SZ || (buffer->info.DataLength % sizeof(WCHAR)) != 0) {
        WFPRC_LOG(DPFLTR_ERROR_LEVEL, "%ws: expected REG_MULTI_SZ of even length", name);
        return STATUS_INVALID_PARAMETER;
    }
    chars = (const WCHAR*)buffer->info.Data;
    nChars = buffer->info.DataLength / sizeof(WCHAR);

    i = 0;
    while (i < nChars && chars[i] != L'\0') {
        ULONG64 value = 0;
        ULONG digits = 0, j;

        for (; i < nChars && chars[i] != L'\0'; i++, digits++) {
            if (chars[i] < L'0' || chars[i] > L'9' || digits >= 10 ||
                (digits == 1 && value == 0)) {          /* leading zero */
                WFPRC_LOG(DPFLTR_ERROR_LEVEL, "%ws: not a canonical decimal number", name);
                return STATUS_INVALID_PARAMETER;
            }
            value = value * 10 + (ULONG)(chars[i] - L'0');
        }
        i++;    /* past the string's NUL (or the end of the data) */
        if (value < 1 || value > maxValue) {
            WFPRC_LOG(DPFLTR_ERROR_LEVEL, "%ws: %I64u out of range 1..%lu", name, value, maxValue);
            return STATUS_INVALID_PARAMETER;
        }
        if (n >= maxCount) {
            WFPRC_LOG(DPFLTR_ERROR_LEVEL, "%ws: more than %lu entries", name, maxCount);
            return STATUS_INVALID_PARAMETER;
        }
        /* Insertion sort keeps the list sorted and finds duplicates. */
        for (j = n; j > 0 && numbers[j - 1] > (ULONG)value; j--) {
            numbers[j] = numbers[j - 1];
        }
        if (j > 0 && numbers[j - 1] == (ULONG)value) {
            WFPRC_LOG(DPFLTR_ERROR_LEVEL, "%ws: %I64u listed twice", name, value);
            return STATUS_INVALID_PARAMETER;
        }
        numbers[j] = (ULONG)value;
        n++;
    }
    *count = n;
    return STATUS_SUCCESS;
}

NTSTATUS WfprcPolicyValidate(_In_ const WFPRC_POLICY* policy)
{
    ULONG i;

    if (policy->tcpPortCount > 0 && policy->tcpProxyPort == 0) {
        WFPRC_LOG(DPFLTR_ERROR_LEVEL, "%ws: must be set when %ws is not empty",
                  WFPRC_VALUE_TCP_PROXY_PORT, WFPRC_VALUE_TCP_PORTS);
        return STATUS_INVALID_PARAMETER;
    }
    if (policy->udpPortCount > 0 && policy->udpProxyPort == 0) {
        WFPRC_LOG(DPFLTR_ERROR_LEVEL, "%ws: must be set when %ws is not empty",
                  WFPRC_VALUE_UDP_PROXY_PORT, WFPRC_VALUE_UDP_PORTS);
        return STATUS_INVALID_PARAMETER;
    }
    /* A proxy port that is itself redirected could never be reached. */
    for (i = 0; i < policy->tcpPortCount; i++) {
        if (policy->tcpPorts[i] == policy->tcpProxyPort) {
            WFPRC_LOG(DPFLTR_ERROR_LEVEL, "%ws: also listed in %ws",
                      WFPRC_VALUE_TCP_PROXY_PORT, WFPRC_VALUE_TCP_PORTS);
            return STATUS_INVALID_PARAMETER;
        }
    }
    for (i = 0; i < policy->udpPortCount; i++) {
        if (policy->udpPorts[i] == policy->udpProxyPort) {
            WFPRC_LOG(DPFLTR_ERROR_LEVEL, "%ws: also listed in %ws",
                      WFPRC_VALUE_UDP_PROXY_PORT, WFPRC_VALUE_UDP_PORTS);
            return STATUS_INVALID_PARAMETER;
        }
    }
    return STATUS_SUCCESS;
}

_IRQL_requires_(PASSIVE_LEVEL)
NTSTATUS WfprcPolicyRead(_In_ PCUNICODE_STRING parametersPath, _Out_ WFPRC_POLICY* policy)
{
    OBJECT_ATTRIBUTES attributes;
    HANDLE key = NULL;
    NTSTATUS status;
    WFPRC_VALUE_BUFFER* buffer = NULL;
    ULONG version, enabled, tcpProxy, udpProxy, list[WFPRC_MAX_PORTS], i;

    PAGED_CODE();
    RtlZeroMemory(policy, sizeof(*policy));
    policy->enabled = TRUE;

    InitializeObjectAttributes(&attributes, (PUNICODE_STRING)parametersPath,
                               OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, NULL);
    status = ZwOpenKey(&key, KEY_READ, &attributes);
    if (status == STATUS_OBJECT_NAME_NOT_FOUND) {
        return STATUS_SUCCESS;          /* no Parameters key: all defaults, inert */
    }
    if (!NT_SUCCESS(status)) {
        return status;
    }

    /* ~1.5 KB: keep it off the kernel stack. */
#if WFPRC_USE_POOL2
    buffer = (WFPRC_VALUE_BUFFER*)ExAllocatePool2(POOL_FLAG_NON_PAGED, sizeof(*buffer), WFPRC_POOL_TAG);
#else
    buffer = (WFPRC_VALUE_BUFFER*)ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(*buffer), WFPRC_POOL_TAG);
#endif
    if (buffer == NULL) {
        status = STATUS_INSUFFICIENT_RESOURCES;
        goto done;
    }

    status = WfprcReadDword(key, WFPRC_VALUE_POLICY_VERSION, WFPRC_POLICY_VERSION, &version, buffer);
    if (!NT_SUCCESS(status)) goto done;
    if (version != WFPRC_POLICY_VERSION) {
        WFPRC_LOG(DPFLTR_ERROR_LEVEL, "%ws: version %lu not supported", WFPRC_VALUE_POLICY_VERSION, version);
        status = STATUS_INVALID_PARAMETER;
        goto done;
    }

    status = WfprcReadDword(key, WFPRC_VALUE_ENABLED, 1, &enabled, buffer);
    if (!NT_SUCCESS(status)) goto done;
    if (enabled > 1) {
        WFPRC_LOG(DPFLTR_ERROR_LEVEL, "%ws: must be 0 or 1", WFPRC_VALUE_ENABLED);
        status = STATUS_INVALID_PARAMETER;
        goto done;
    }
    policy->enabled = (BOOLEAN)enabled;

    status = WfprcReadDword(key, WFPRC_VALUE_TCP_PROXY_PORT, 0, &tcpProxy, buffer);
    if (!NT_SUCCESS(status)) goto done;
    status = WfprcReadDword(key, WFPRC_VALUE_UDP_PROXY_PORT, 0, &udpProxy, buffer);
    if (!NT_SUCCESS(status)) goto done;
    if (tcpProxy > MAXUSHORT || udpProxy > MAXUSHORT) {
        WFPRC_LOG(DPFLTR_ERROR_LEVEL, "%ws: port out of range 0..65535",
                  tcpProxy > MAXUSHORT ? WFPRC_VALUE_TCP_PROXY_PORT : WFPRC_VALUE_UDP_PROXY_PORT);
        status = STATUS_INVALID_PARAMETER;
        goto done;
    }
    policy->tcpProxyPort = (USHORT)tcpProxy;
    policy->udpProxyPort = (USHORT)udpProxy;

    status = WfprcReadDword(key, WFPRC_VALUE_PROXY_PROCESS_ID, 0, &policy->proxyProcessId, buffer);
    if (!NT_SUCCESS(status)) goto done;

    status = WfprcReadNumberList(key, WFPRC_VALUE_TCP_PORTS, MAXUSHORT, WFPRC_MAX_PORTS,
                                 list, &policy->tcpPortCount, buffer);
    if (!NT_SUCCESS(status)) goto done;
    for (i = 0; i < policy->tcpPortCount; i++) policy->tcpPorts[i] = (USHORT)list[i];

    status = WfprcReadNumberList(key, WFPRC_VALUE_UDP_PORTS, MAXUSHORT, WFPRC_MAX_PORTS,
                                 list, &policy->udpPortCount, buffer);
    if (!NT_SUCCESS(status)) goto done;
    for (i = 0; i < policy->udpPortCount; i++) policy->udpPorts[i] = (USHORT)list[i];

    status = WfprcReadNumberList(key, WFPRC_VALUE_EXCLUDED_PROCESS_IDS, MAXULONG, WFPRC_MAX_EXCLUDED_PIDS,
                                 policy->excludedPids, &policy->excludedPidCount, buffer);
    if (!NT_SUCCESS(status)) goto done;

    status = WfprcPolicyValidate(policy);

done:
    if (buffer != NULL) {
        ExFreePoolWithTag(buffer, WFPRC_POOL_TAG);
    }
    ZwClose(key);
    if (!NT_SUCCESS(status)) {
        RtlZeroMemory(policy, sizeof(*policy));     /* never half a policy */
    }
    return status;
}

_IRQL_requires_(PASSIVE_LEVEL)
NTSTATUS WfprcPolicyReload(_Out_opt_ WFPRC_RELOAD_RESULT* result)
{
    WFPRC_POLICY fresh;
    KIRQL oldIrql;
    NTSTATUS status;

    status = WfprcPolicyRead(&g_Wfprc.parametersPath, &fresh);
    if (!NT_SUCCESS(status)) {
        return status;                  /* the old policy stays in force */
    }
    KeAcquireSpinLock(&g_Wfprc.policyLock, &oldIrql);
    g_Wfprc.policy = fresh;
    g_Wfprc.generation++;
    if (result != NULL) {
        result->generation = g_Wfprc.generation;
        result->proxyProcessId = fresh.proxyProcessId;
        result->tcpPortCount = fresh.tcpPortCount;
        result->udpPortCount = fresh.udpPortCount;
    }
    KeReleaseSpinLock(&g_Wfprc.policyLock, oldIrql);
    WFPRC_LOG(DPFLTR_INFO_LEVEL, "policy generation %lu, proxy pid %lu",
              g_Wfprc.generation, fresh.proxyProcessId);
    return STATUS_SUCCESS;
}

static BOOLEAN WfprcPortListed(const USHORT* ports, ULONG count, USHORT port)
{
    ULONG low = 0, high = count;

    while (low < high) {                /* sorted: binary search */
        ULONG mid = low + (high - low) / 2;
        if (ports[mid] == port) return TRUE;
        if (ports[mid] < port) low = mid + 1; else high = mid;
    }
    return FALSE;
}

/* Policy half of the decision (RedirectPolicy.matches in Python). */
_IRQL_requires_max_(DISPATCH_LEVEL)
BOOLEAN WfprcPolicyMatch(UINT8 protocol, USHORT remotePort, UINT64 processId, _Out_ WFPRC_MATCH* match)
{
    KIRQL oldIrql;
    BOOLEAN matched = FALSE;
    const WFPRC_POLICY* policy = &g_Wfprc.policy;
    ULONG i;

    RtlZeroMemory(match, sizeof(*match));
    KeAcquireSpinLock(&g_Wfprc.policyLock, &oldIrql);
    if (policy->enabled && policy->proxyProcessId != 0) {
        if (protocol == IPPROTO_TCP) {
            matched = WfprcPortListed(policy->tcpPorts, policy->tcpPortCount, remotePort);
            match->proxyPort = policy->tcpProxyPort;
        } else if (protocol == IPPROTO_UDP) {
            matched = WfprcPortListed(policy->udpPorts, policy->udpPortCount, remotePort);
            match->proxyPort = policy->udpProxyPort;
        }
        for (i = 0; matched && i < policy->excludedPidCount; i++) {
            if ((UINT64)policy->excludedPids[i] == processId) {
                matched = FALSE;
            }
        }
        match->proxyProcessId = policy->proxyProcessId;
        match->generation = g_Wfprc.generation;
    }
    KeReleaseSpinLock(&g_Wfprc.policyLock, oldIrql);
    return matched;
}
