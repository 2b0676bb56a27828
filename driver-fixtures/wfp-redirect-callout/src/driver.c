/*
 * driver.c - DriverEntry, unload and the control device of the sample WFP
 * connect-redirect callout (WDM, non-PnP "primitive" driver).
 *
 * The control device \\.\WfpRedirectCallout (administrators and SYSTEM
 * only) takes one IOCTL, IOCTL_WFPRC_RELOAD_POLICY: the proxy writes its
 * PID (and any other change) to the Parameters key, then asks the driver
 * to re-read it. See POLICY.md.
 */

/* Instantiate every DEFINE_GUID (the WDK's FWPM_* keys and ours) here only. */
#define INITGUID
#include <guiddef.h>

#include "wfprc_kernel.h"

WFPRC_GLOBALS g_Wfprc;

DRIVER_INITIALIZE DriverEntry;
static DRIVER_UNLOAD WfprcUnload;

_Dispatch_type_(IRP_MJ_CREATE)
_Dispatch_type_(IRP_MJ_CLOSE)
_Dispatch_type_(IRP_MJ_CLEANUP)
static DRIVER_DISPATCH WfprcDispatchCreateClose;

_Dispatch_type_(IRP_MJ_DEVICE_CONTROL)
static DRIVER_DISPATCH WfprcDispatchDeviceControl;

/* Class GUID for IoCreateDeviceSecure: a software-only control device.
 * 6d1e3c2a-4b5f-4e8d-9a07-1c2b3d4e5f60 */
DEFINE_GUID(WFPRC_DEVICE_CLASS_GUID, 0x6d1e3c2a, 0x4b5f, 0x4e8d, 0x9a, 0x07, 0x1c, 0x2b, 0x3d, 0x4e, 0x5f, 0x60);

static NTSTATUS WfprcCopyParametersPath(_In_ PCUNICODE_STRING registryPath)
{
    static const WCHAR suffix[] = L"\\Parameters";
    USHORT length = (USHORT)(registryPath->Length + sizeof(suffix) - sizeof(WCHAR));
    PWCH buffer;

    if (registryPath->Length > MAXUSHORT - sizeof(suffix)) {
        return STATUS_INVALID_PARAMETER;
    }
#if WFPRC_USE_POOL2
    buffer = (PWCH)ExAllocatePool2(POOL_FLAG_NON_PAGED, length + sizeof(WCHAR), WFPRC_POOL_TAG);
#else
    buffer = (PWCH)ExAllocatePoolWithTag(NonPagedPoolNx, length + sizeof(WCHAR), WFPRC_POOL_TAG);
#endif
    if (buffer == NULL) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    RtlCopyMemory(buffer, registryPath->Buffer, registryPath->Length);
    RtlCopyMemory((PUCHAR)buffer + registryPath->Length, suffix, sizeof(suffix));
    g_Wfprc.parametersPath.Buffer = buffer;
    g_Wfprc.parametersPath.Length = length;
    g_Wfprc.parametersPath.MaximumLength = (USHORT)(length + sizeof(WCHAR));
    return STATUS_SUCCESS;
}

static VOID WfprcCleanup(_In_ PDRIVER_OBJECT driverObject)
{
    UNICODE_STRING dosName;

    UNREFERENCED_PARAMETER(driverObject);

    /* Filters first, then callouts, sublayer, provider, redirect handle
     * (wfp_setup.c): a callout cannot be unregistered while a filter uses it. */
    WfprcWfpTeardown();

    if (g_Wfprc.symbolicLinkCreated) {
        RtlInitUnicodeString(&dosName, WFPRC_DOS_DEVICE_NAME);
        IoDeleteSymbolicLink(&dosName);
        g_Wfprc.symbolicLinkCreated = FALSE;
    }
    if (g_Wfprc.deviceObject != NULL) {
        IoDeleteDevice(g_Wfprc.deviceObject);
        g_Wfprc.deviceObject = NULL;
    }
    if (g_Wfprc.parametersPath.Buffer != NULL) {
        ExFreePoolWithTag(g_Wfprc.parametersPath.Buffer, WFPRC_POOL_TAG);
        g_Wfprc.parametersPath.Buffer = NULL;
    }
}

NTSTATUS DriverEntry(_In_ PDRIVER_OBJECT driverObject, _In_ PUNICODE_STRING registryPath)
{
    NTSTATUS status;
    UNICODE_STRING deviceName;
    UNICODE_STRING dosName;
    WFPRC_POLICY initial;

    RtlZeroMemory(&g_Wfprc, sizeof(g_Wfprc));
    KeInitializeSpinLock(&g_Wfprc.policyLock);

    driverObject->DriverUnload = WfprcUnload;
    driverObject->MajorFunction[IRP_MJ_CREATE] = WfprcDispatchCreateClose;
    driverObject->MajorFunction[IRP_MJ_CLOSE] = WfprcDispatchCreateClose;
    driverObject->MajorFunction[IRP_MJ_CLEANUP] = WfprcDispatchCreateClose;
    driverObject->MajorFunction[IRP_MJ_DEVICE_CONTROL] = WfprcDispatchDeviceControl;

    status = WfprcCopyParametersPath(registryPath);
    if (!NT_SUCCESS(status)) {
        goto fail;
    }

    /* A bad policy must not keep the driver from loading (the proxy may be
     * about to fix it); start inert and say why. */
    status = WfprcPolicyRead(&g_Wfprc.parametersPath, &initial);
    if (NT_SUCCESS(status)) {
        g_Wfprc.policy = initial;
        g_Wfprc.generation = 1;
    } else {
        WFPRC_LOG(DPFLTR_WARNING_LEVEL, "policy rejected at load (0x%08X); redirecting nothing", status);
    }

    RtlInitUnicodeString(&deviceName, WFPRC_DEVICE_NAME);
    status = IoCreateDeviceSecure(driverObject, 0, &deviceName, FILE_DEVICE_WFPRC,
                                  FILE_DEVICE_SECURE_OPEN, FALSE,
                                  &SDDL_DEVOBJ_SYS_ALL_ADM_ALL, &WFPRC_DEVICE_CLASS_GUID,
                                  &g_Wfprc.deviceObject);
    if (!NT_SUCCESS(status)) {
        goto fail;
    }

    RtlInitUnicodeString(&dosName, WFPRC_DOS_DEVICE_NAME);
    status = IoCreateSymbolicLink(&dosName, &deviceName);
    if (!NT_SUCCESS(status)) {
        goto fail;
    }
    g_Wfprc.symbolicLinkCreated = TRUE;

    /* Redirect handle, callouts, provider, sublayer, filters. */
    status = WfprcWfpSetup(g_Wfprc.deviceObject);
    if (!NT_SUCCESS(status)) {
        goto fail;
    }

    g_Wfprc.deviceObject->Flags &= ~DO_DEVICE_INITIALIZING;
    WFPRC_LOG(DPFLTR_INFO_LEVEL, "loaded, policy generation %lu", g_Wfprc.generation);
    return STATUS_SUCCESS;

fail:
    WFPRC_LOG(DPFLTR_ERROR_LEVEL, "DriverEntry failed 0x%08X", status);
    WfprcCleanup(driverObject);
    return status;
}

static VOID WfprcUnload(_In_ PDRIVER_OBJECT driverObject)
{
    WfprcCleanup(driverObject);
    WFPRC_LOG(DPFLTR_INFO_LEVEL, "unloaded%s", "");
}

static NTSTATUS WfprcDispatchCreateClose(_In_ PDEVICE_OBJECT deviceObject, _Inout_ PIRP irp)
{
    UNREFERENCED_PARAMETER(deviceObject);
    irp->IoStatus.Status = STATUS_SUCCESS;
    irp->IoStatus.Information = 0;
    IoCompleteRequest(irp, IO_NO_INCREMENT);
    return STATUS_SUCCESS;
}

static NTSTATUS WfprcDispatchDeviceControl(_In_ PDEVICE_OBJECT deviceObject, _Inout_ PIRP irp)
{
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(irp);
    NTSTATUS status;
    ULONG_PTR information = 0;
    WFPRC_RELOAD_RESULT result;

    UNREFERENCED_PARAMETER(deviceObject);

    switch (stack->Parameters.DeviceIoControl.IoControlCode) {
    case IOCTL_WFPRC_RELOAD_POLICY:
        /* Dispatch runs at PASSIVE_LEVEL, as the registry read needs. */
        status = WfprcPolicyReload(&result);
        if (NT_SUCCESS(status) &&
            stack->Parameters.DeviceIoControl.OutputBufferLength >= sizeof(result)) {
            RtlCopyMemory(irp->AssociatedIrp.SystemBuffer, &result, sizeof(result));
            information = sizeof(result);
        }
        break;
    default:
        status = STATUS_INVALID_DEVICE_REQUEST;
        break;
    }

    irp->IoStatus.Status = status;
    irp->IoStatus.Information = information;
    IoCompleteRequest(irp, IO_NO_INCREMENT);
    return status;
}
