/*
 * fwps_prototypes.h - the documented FWPS/FWPM kernel declarations this
 * driver uses, for the CI syntax-only check against mingw-w64's DDK
 * headers (which have no fwpsk.h/fwpmk.h, and whose user-mode fwptypes.h
 * pulls in windows.h, which clashes with ntddk.h).
 *
 * NOT for building the driver: the WDK build includes the real <fwpsk.h>
 * and <fwpmk.h> (see wfprc_kernel.h), and this file is inert once the
 * real fwpsk.h has been seen. Names, member order and values follow the
 * Windows SDK 10.0.16299 km/fwpsk.h, shared/fwpstypes.h, shared/fwptypes.h,
 * um/fwpmtypes.h and the WDK documentation (docs/facts.md §5.1-5.4). Structures
 * this driver never reads are declared opaque.
 */
#ifndef FWPS_PROTOTYPES_H
#define FWPS_PROTOTYPES_H

#if !defined(FWPSX_H)   /* real fwpsk.h not included */

#include <ws2def.h>                 /* SCOPE_ID */
#include <inaddr.h>                 /* IN_ADDR */
#include <in6addr.h>                /* IN6_ADDR */
#include <psdk_inc/_ip_types.h>     /* SOCKADDR, SOCKADDR_IN */

/* ---- sockets (ws2def.h / ws2ipdef.h); mingw's ws2def.h is a stub ---------- */
#ifndef AF_INET
#define AF_INET   2
#endif
#ifndef AF_INET6
#define AF_INET6  23
#endif
typedef USHORT ADDRESS_FAMILY;
#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#endif

typedef struct sockaddr_in6 {
    ADDRESS_FAMILY sin6_family;
    USHORT sin6_port;
    ULONG sin6_flowinfo;
    IN6_ADDR sin6_addr;
    union {
        ULONG sin6_scope_id;
        SCOPE_ID sin6_scope_struct;
    };
} SOCKADDR_IN6, *PSOCKADDR_IN6;

typedef struct sockaddr_storage {
    ADDRESS_FAMILY ss_family;
    CHAR __ss_pad1[6];
    __int64 __ss_align;
    CHAR __ss_pad2[112];
} SOCKADDR_STORAGE, *PSOCKADDR_STORAGE;

typedef struct _WSACMSGHDR {
    SIZE_T cmsg_len;
    INT cmsg_level;
    INT cmsg_type;
} WSACMSGHDR;

/* ---- base types and annotations the WDK has and mingw's DDK lacks ------- */
typedef unsigned long DWORD;
#ifndef _Dispatch_type_
#define _Dispatch_type_(x)
#endif

/* ---- pool (wdm.h, Windows 10 2004+); absent from mingw-w64 ---------------- */
#ifndef POOL_FLAG_NON_PAGED
typedef ULONG64 POOL_FLAGS;
#define POOL_FLAG_NON_PAGED 0x0000000000000040ULL
NTKERNELAPI PVOID NTAPI ExAllocatePool2(POOL_FLAGS Flags, SIZE_T NumberOfBytes, ULONG Tag);
#endif

/* ---- fwptypes.h ------------------------------------------------------------ */
typedef UINT32 FWP_ACTION_TYPE;

#define FWP_ACTION_FLAG_TERMINATING     0x00001000
#define FWP_ACTION_FLAG_NON_TERMINATING 0x00002000
#define FWP_ACTION_FLAG_CALLOUT         0x00004000
#define FWP_ACTION_BLOCK                (0x00000001 | FWP_ACTION_FLAG_TERMINATING)
#define FWP_ACTION_PERMIT               (0x00000002 | FWP_ACTION_FLAG_TERMINATING)
#define FWP_ACTION_CALLOUT_TERMINATING  (0x00000003 | FWP_ACTION_FLAG_CALLOUT | FWP_ACTION_FLAG_TERMINATING)
#define FWP_ACTION_CALLOUT_INSPECTION   (0x00000004 | FWP_ACTION_FLAG_CALLOUT | FWP_ACTION_FLAG_NON_TERMINATING)
#define FWP_ACTION_CALLOUT_UNKNOWN      (0x00000005 | FWP_ACTION_FLAG_CALLOUT)
#define FWP_ACTION_CONTINUE             (0x00000006 | FWP_ACTION_FLAG_NON_TERMINATING)
#define FWP_ACTION_NONE                 0x00000007
#define FWP_ACTION_NONE_NO_MATCH        0x00000008

#define FWP_CONDITION_FLAG_IS_LOOPBACK              0x00000001
#define FWP_CONDITION_FLAG_IS_REAUTHORIZE           0x00000004
#define FWP_CONDITION_FLAG_IS_CONNECTION_REDIRECTED 0x00100000
#define FWP_CONDITION_FLAG_IS_PROXY_CONNECTION      0x00200000

typedef enum FWP_DIRECTION_ {
    FWP_DIRECTION_OUTBOUND = 0, FWP_DIRECTION_INBOUND = 1, FWP_DIRECTION_MAX = 2
} FWP_DIRECTION;

typedef enum FWP_DATA_TYPE_ {
    FWP_EMPTY = 0, FWP_UINT8 = 1, FWP_UINT16 = 2, FWP_UINT32 = 3, FWP_UINT64 = 4,
    FWP_INT8 = 5, FWP_INT16 = 6, FWP_INT32 = 7, FWP_INT64 = 8, FWP_FLOAT = 9,
    FWP_DOUBLE = 10, FWP_BYTE_ARRAY16_TYPE = 11, FWP_BYTE_BLOB_TYPE = 12, FWP_SID = 13,
    FWP_SECURITY_DESCRIPTOR_TYPE = 14, FWP_TOKEN_INFORMATION_TYPE = 15,
    FWP_TOKEN_ACCESS_INFORMATION_TYPE = 16, FWP_UNICODE_STRING_TYPE = 17,
    FWP_BYTE_ARRAY6_TYPE = 18, FWP_SINGLE_DATA_TYPE_MAX = 0xff,
    FWP_V4_ADDR_MASK = 0x100, FWP_V6_ADDR_MASK = 0x101, FWP_RANGE_TYPE = 0x102,
    FWP_DATA_TYPE_MAX = 0x103
} FWP_DATA_TYPE;

typedef enum FWP_MATCH_TYPE_ {
    FWP_MATCH_EQUAL = 0, FWP_MATCH_GREATER = 1, FWP_MATCH_LESS = 2,
    FWP_MATCH_GREATER_OR_EQUAL = 3, FWP_MATCH_LESS_OR_EQUAL = 4, FWP_MATCH_RANGE = 5,
    FWP_MATCH_FLAGS_ALL_SET = 6, FWP_MATCH_FLAGS_ANY_SET = 7, FWP_MATCH_FLAGS_NONE_SET = 8,
    FWP_MATCH_EQUAL_CASE_INSENSITIVE = 9, FWP_MATCH_NOT_EQUAL = 10, FWP_MATCH_TYPE_MAX = 11
} FWP_MATCH_TYPE;

typedef struct FWP_BYTE_ARRAY16_ { UINT8 byteArray16[16]; } FWP_BYTE_ARRAY16;
typedef struct FWP_BYTE_ARRAY6_ { UINT8 byteArray6[6]; } FWP_BYTE_ARRAY6;
typedef struct FWP_BYTE_BLOB_ { UINT32 size; UINT8* data; } FWP_BYTE_BLOB;
typedef struct FWP_V4_ADDR_AND_MASK_ { UINT32 addr; UINT32 mask; } FWP_V4_ADDR_AND_MASK;
typedef struct FWP_V6_ADDR_AND_MASK_ { UINT8 addr[16]; UINT8 prefixLength; } FWP_V6_ADDR_AND_MASK;
struct FWP_TOKEN_INFORMATION_;
struct FWP_RANGE0_;

typedef struct FWP_VALUE0_ {
    FWP_DATA_TYPE type;
    union {
        UINT8 uint8; UINT16 uint16; UINT32 uint32; UINT64* uint64;
        INT8 int8; INT16 int16; INT32 int32; INT64* int64;
        float float32; double* double64;
        FWP_BYTE_ARRAY16* byteArray16; FWP_BYTE_BLOB* byteBlob; struct _SID* sid; FWP_BYTE_BLOB* sd;
        struct FWP_TOKEN_INFORMATION_* tokenInformation; FWP_BYTE_BLOB* tokenAccessInformation;
        LPWSTR unicodeString; FWP_BYTE_ARRAY6* byteArray6;
    };
} FWP_VALUE0;

typedef struct FWP_CONDITION_VALUE0_ {
    FWP_DATA_TYPE type;
    union {
        UINT8 uint8; UINT16 uint16; UINT32 uint32; UINT64* uint64;
        INT8 int8; INT16 int16; INT32 int32; INT64* int64;
        float float32; double* double64;
        FWP_BYTE_ARRAY16* byteArray16; FWP_BYTE_BLOB* byteBlob; struct _SID* sid; FWP_BYTE_BLOB* sd;
        struct FWP_TOKEN_INFORMATION_* tokenInformation; FWP_BYTE_BLOB* tokenAccessInformation;
        LPWSTR unicodeString; FWP_BYTE_ARRAY6* byteArray6;
        FWP_V4_ADDR_AND_MASK* v4AddrMask; FWP_V6_ADDR_AND_MASK* v6AddrMask;
        struct FWP_RANGE0_* rangeValue;
    };
} FWP_CONDITION_VALUE0;

/* ---- fwpmtypes.h (management objects) ------------------------------------- */
typedef struct FWPM_DISPLAY_DATA0_ { wchar_t* name; wchar_t* description; } FWPM_DISPLAY_DATA0;

#define FWPM_SESSION_FLAG_DYNAMIC 0x00000001

typedef struct FWPM_SESSION0_ {
    GUID sessionKey;
    FWPM_DISPLAY_DATA0 displayData;
    UINT32 flags;
    UINT32 txnWaitTimeoutInMSec;
    DWORD processId;
    struct _SID* sid;
    wchar_t* username;
    BOOL kernelMode;
} FWPM_SESSION0;

typedef struct FWPM_PROVIDER0_ {
    GUID providerKey;
    FWPM_DISPLAY_DATA0 displayData;
    UINT32 flags;
    FWP_BYTE_BLOB providerData;
    wchar_t* serviceName;
} FWPM_PROVIDER0;

typedef struct FWPM_SUBLAYER0_ {
    GUID subLayerKey;
    FWPM_DISPLAY_DATA0 displayData;
    UINT32 flags;
    GUID* providerKey;
    FWP_BYTE_BLOB providerData;
    UINT16 weight;
} FWPM_SUBLAYER0;

typedef struct FWPM_CALLOUT0_ {
    GUID calloutKey;
    FWPM_DISPLAY_DATA0 displayData;
    UINT32 flags;
    GUID* providerKey;
    FWP_BYTE_BLOB providerData;
    GUID applicableLayer;
    UINT32 calloutId;
} FWPM_CALLOUT0;

typedef struct FWPM_ACTION0_ {
    FWP_ACTION_TYPE type;
    union { GUID filterType; GUID calloutKey; };
} FWPM_ACTION0;

typedef struct FWPM_FILTER_CONDITION0_ {
    GUID fieldKey;
    FWP_MATCH_TYPE matchType;
    FWP_CONDITION_VALUE0 conditionValue;
} FWPM_FILTER_CONDITION0;

typedef struct FWPM_FILTER0_ {
    GUID filterKey;
    FWPM_DISPLAY_DATA0 displayData;
    UINT32 flags;
    GUID* providerKey;
    FWP_BYTE_BLOB providerData;
    GUID layerKey;
    GUID subLayerKey;
    FWP_VALUE0 weight;
    UINT32 numFilterConditions;
    FWPM_FILTER_CONDITION0* filterCondition;
    FWPM_ACTION0 action;
    union { UINT64 rawContext; GUID providerContextKey; };
    GUID* reserved;
    UINT64 filterId;
    FWP_VALUE0 effectiveWeight;
} FWPM_FILTER0;

/* Layer and condition keys (fwpmu.h; values as in docs/facts.md §5.1). */
DEFINE_GUID(FWPM_LAYER_ALE_CONNECT_REDIRECT_V4, 0xc6e63c8c, 0xb784, 0x4562, 0xaa, 0x7d, 0x0a, 0x67, 0xcf, 0xca, 0xf9, 0xa3);
DEFINE_GUID(FWPM_LAYER_ALE_CONNECT_REDIRECT_V6, 0x587e54a7, 0x8046, 0x42ba, 0xa0, 0xaa, 0xb7, 0x16, 0x25, 0x0f, 0xc7, 0xfd);
DEFINE_GUID(FWPM_CONDITION_IP_PROTOCOL, 0x3971ef2b, 0x623e, 0x4f9a, 0x8c, 0xb1, 0x6e, 0x79, 0xb8, 0x06, 0xb9, 0xa7);

/* ---- fwpmk.h (kernel-mode management API; returns NTSTATUS) --------------- */
#ifndef RPC_C_AUTHN_WINNT
#define RPC_C_AUTHN_WINNT 10
#endif
struct _SEC_WINNT_AUTH_IDENTITY_W;

NTSTATUS NTAPI FwpmEngineOpen0(const wchar_t* serverName, UINT32 authnService,
                               struct _SEC_WINNT_AUTH_IDENTITY_W* authIdentity,
                               const FWPM_SESSION0* session, HANDLE* engineHandle);
NTSTATUS NTAPI FwpmEngineClose0(HANDLE engineHandle);
NTSTATUS NTAPI FwpmTransactionBegin0(HANDLE engineHandle, UINT32 flags);
NTSTATUS NTAPI FwpmTransactionCommit0(HANDLE engineHandle);
NTSTATUS NTAPI FwpmTransactionAbort0(HANDLE engineHandle);
NTSTATUS NTAPI FwpmProviderAdd0(HANDLE engineHandle, const FWPM_PROVIDER0* provider, PSECURITY_DESCRIPTOR sd);
NTSTATUS NTAPI FwpmProviderDeleteByKey0(HANDLE engineHandle, const GUID* key);
NTSTATUS NTAPI FwpmSubLayerAdd0(HANDLE engineHandle, const FWPM_SUBLAYER0* subLayer, PSECURITY_DESCRIPTOR sd);
NTSTATUS NTAPI FwpmSubLayerDeleteByKey0(HANDLE engineHandle, const GUID* key);
NTSTATUS NTAPI FwpmCalloutAdd0(HANDLE engineHandle, const FWPM_CALLOUT0* callout, PSECURITY_DESCRIPTOR sd, UINT32* id);
NTSTATUS NTAPI FwpmCalloutDeleteByKey0(HANDLE engineHandle, const GUID* key);
NTSTATUS NTAPI FwpmFilterAdd0(HANDLE engineHandle, const FWPM_FILTER0* filter, PSECURITY_DESCRIPTOR sd, UINT64* id);
NTSTATUS NTAPI FwpmFilterDeleteById0(HANDLE engineHandle, UINT64 id);

/* ---- fwpstypes.h ------------------------------------------------------------ */
#define FWPS_RIGHT_ACTION_WRITE 0x00000001
#define FWPS_CLASSIFY_OUT_FLAG_ABSORB 0x00000001

typedef struct FWPS_CLASSIFY_OUT0_ {
    FWP_ACTION_TYPE actionType;
    UINT64 outContext;
    UINT64 filterId;
    UINT32 rights;
    UINT32 flags;
    UINT32 reserved;
} FWPS_CLASSIFY_OUT0;

/* ---- fwpsk.h ----------------------------------------------------------------- */
enum {
    FWPS_LAYER_ALE_CONNECT_REDIRECT_V4 = 66,
    FWPS_LAYER_ALE_CONNECT_REDIRECT_V6 = 67
};

/* Same order for V4 and V6 (DDI docs FWPS_FIELDS_ALE_CONNECT_REDIRECT_V4/V6). */
typedef enum FWPS_FIELDS_ALE_CONNECT_REDIRECT_V4_ {
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_ALE_APP_ID,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_ALE_USER_ID,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_IP_LOCAL_ADDRESS,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_IP_LOCAL_ADDRESS_TYPE,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_IP_LOCAL_PORT,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_IP_PROTOCOL,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_IP_REMOTE_ADDRESS,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_IP_DESTINATION_ADDRESS_TYPE,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_IP_REMOTE_PORT,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_FLAGS,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_ALE_ORIGINAL_APP_ID,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V4_ALE_PACKAGE_ID
} FWPS_FIELDS_ALE_CONNECT_REDIRECT_V4;

typedef enum FWPS_FIELDS_ALE_CONNECT_REDIRECT_V6_ {
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_ALE_APP_ID,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_ALE_USER_ID,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_IP_LOCAL_ADDRESS,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_IP_LOCAL_ADDRESS_TYPE,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_IP_LOCAL_PORT,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_IP_PROTOCOL,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_IP_REMOTE_ADDRESS,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_IP_DESTINATION_ADDRESS_TYPE,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_IP_REMOTE_PORT,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_FLAGS,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_ALE_ORIGINAL_APP_ID,
    FWPS_FIELD_ALE_CONNECT_REDIRECT_V6_ALE_PACKAGE_ID
} FWPS_FIELDS_ALE_CONNECT_REDIRECT_V6;

typedef struct FWPS_INCOMING_VALUE0_ { FWP_VALUE0 value; } FWPS_INCOMING_VALUE0;

typedef struct FWPS_INCOMING_VALUES0_ {
    UINT16 layerId;
    UINT32 valueCount;
    FWPS_INCOMING_VALUE0* incomingValue;
} FWPS_INCOMING_VALUES0;

#define FWPS_METADATA_FIELD_PROCESS_ID                0x00000020
#define FWPS_METADATA_FIELD_LOCAL_REDIRECT_TARGET_PID 0x10000000
#define FWPS_METADATA_FIELD_ORIGINAL_DESTINATION      0x20000000
#define FWPS_METADATA_FIELD_REDIRECT_RECORD_HANDLE    0x40000000

typedef struct FWPS_DISCARD_METADATA0_ { UINT32 discardModule; UINT32 discardReason; UINT64 filterId; } FWPS_DISCARD_METADATA0;
typedef struct FWPS_INBOUND_FRAGMENT_METADATA0_ { UINT32 fragmentIdentification; UINT16 fragmentOffset; ULONG fragmentLength; } FWPS_INBOUND_FRAGMENT_METADATA0;
typedef struct WFPRC_IP_ADDRESS_PREFIX_ { SOCKADDR_STORAGE Prefix; UINT8 PrefixLength; } WFPRC_IP_ADDRESS_PREFIX;

/* Member order of the Windows 8+ structure (fwpsk.h); the vSwitch members
 * are the non-NDIS630 padding variant. */
typedef struct FWPS_INCOMING_METADATA_VALUES0_ {
    UINT32 currentMetadataValues;
    UINT32 flags;
    UINT64 reserved;
    FWPS_DISCARD_METADATA0 discardMetadata;
    UINT64 flowHandle;
    UINT32 ipHeaderSize;
    UINT32 transportHeaderSize;
    FWP_BYTE_BLOB* processPath;
    UINT64 token;
    UINT64 processId;
    UINT32 sourceInterfaceIndex;
    UINT32 destinationInterfaceIndex;
    ULONG compartmentId;
    FWPS_INBOUND_FRAGMENT_METADATA0 fragmentMetadata;
    ULONG pathMtu;
    HANDLE completionHandle;
    UINT64 transportEndpointHandle;
    SCOPE_ID remoteScopeId;
    WSACMSGHDR* controlData;
    ULONG controlDataLength;
    FWP_DIRECTION packetDirection;
    PVOID headerIncludeHeader;
    ULONG headerIncludeHeaderLength;
    WFPRC_IP_ADDRESS_PREFIX destinationPrefix;
    UINT16 frameLength;
    UINT64 parentEndpointHandle;
    UINT32 icmpIdAndSequence;
    DWORD localRedirectTargetPID;
    SOCKADDR* originalDestination;
    HANDLE redirectRecords;
    UINT32 currentL2MetadataValues;
    UINT32 l2Flags;
    UINT32 ethernetMacHeaderSize;
    UINT32 wiFiOperationMode;
    UINT32 padding0;
    USHORT padding1;
    UINT32 padding2;
    HANDLE vSwitchPacketContext;
    PVOID subProcessTag;
    UINT64 reserved1;
} FWPS_INCOMING_METADATA_VALUES0;

#define FWPS_IS_METADATA_FIELD_PRESENT(metadataValues, metadataField) \
    (((metadataValues)->currentMetadataValues & (metadataField)) == (metadataField))

struct FWPS_FILTER_CONDITION0_;
struct FWPM_PROVIDER_CONTEXT1_;

typedef struct FWPS_ACTION0_ { FWP_ACTION_TYPE type; UINT32 calloutId; } FWPS_ACTION0;

#define FWPS_FILTER_FLAG_CLEAR_ACTION_RIGHT 0x00000001

typedef struct FWPS_FILTER1_ {
    UINT64 filterId;
    FWP_VALUE0 weight;
    UINT16 subLayerWeight;
    UINT16 flags;
    UINT32 numFilterConditions;
    struct FWPS_FILTER_CONDITION0_* filterCondition;
    FWPS_ACTION0 action;
    UINT64 context;
    struct FWPM_PROVIDER_CONTEXT1_* providerContext;
} FWPS_FILTER1;

/* Layer data at ALE_CONNECT_REDIRECT (docs/facts.md §5.2). */
typedef struct FWPS_CONNECT_REQUEST0_ {
    SOCKADDR_STORAGE localAddressAndPort;
    SOCKADDR_STORAGE remoteAddressAndPort;
    UINT64 portReservationToken;
    DWORD localRedirectTargetPID;
    struct FWPS_CONNECT_REQUEST0_* previousVersion;
    UINT64 modifierFilterId;
    HANDLE localRedirectHandle;
    void* localRedirectContext;
    SIZE_T localRedirectContextSize;
} FWPS_CONNECT_REQUEST0;

typedef enum FWPS_CALLOUT_NOTIFY_TYPE_ {
    FWPS_CALLOUT_NOTIFY_ADD_FILTER,
    FWPS_CALLOUT_NOTIFY_DELETE_FILTER,
    FWPS_CALLOUT_NOTIFY_ADD_FILTER_POST_COMMIT,
    FWPS_CALLOUT_NOTIFY_TYPE_MAX
} FWPS_CALLOUT_NOTIFY_TYPE;

typedef void (NTAPI* FWPS_CALLOUT_CLASSIFY_FN1)(
    const FWPS_INCOMING_VALUES0* inFixedValues,
    const FWPS_INCOMING_METADATA_VALUES0* inMetaValues,
    void* layerData, const void* classifyContext, const FWPS_FILTER1* filter,
    UINT64 flowContext, FWPS_CLASSIFY_OUT0* classifyOut);
typedef NTSTATUS (NTAPI* FWPS_CALLOUT_NOTIFY_FN1)(
    FWPS_CALLOUT_NOTIFY_TYPE notifyType, const GUID* filterKey, FWPS_FILTER1* filter);
typedef void (NTAPI* FWPS_CALLOUT_FLOW_DELETE_NOTIFY_FN0)(
    UINT16 layerId, UINT32 calloutId, UINT64 flowContext);

typedef struct FWPS_CALLOUT1_ {
    GUID calloutKey;
    UINT32 flags;
    FWPS_CALLOUT_CLASSIFY_FN1 classifyFn;
    FWPS_CALLOUT_NOTIFY_FN1 notifyFn;
    FWPS_CALLOUT_FLOW_DELETE_NOTIFY_FN0 flowDeleteFn;
} FWPS_CALLOUT1;

typedef enum FWPS_CONNECTION_REDIRECT_STATE_ {
    FWPS_CONNECTION_NOT_REDIRECTED = 0,
    FWPS_CONNECTION_REDIRECTED_BY_SELF = 1,
    FWPS_CONNECTION_REDIRECTED_BY_OTHER = 2,
    FWPS_CONNECTION_PREVIOUSLY_REDIRECTED_BY_SELF = 3,
    FWPS_CONNECTION_REDIRECT_STATE_MAX
} FWPS_CONNECTION_REDIRECT_STATE;

NTSTATUS NTAPI FwpsCalloutRegister1(void* deviceObject, const FWPS_CALLOUT1* callout, UINT32* calloutId);
NTSTATUS NTAPI FwpsCalloutUnregisterById0(const UINT32 calloutId);
NTSTATUS NTAPI FwpsAcquireClassifyHandle0(void* classifyContext, UINT32 reserved, UINT64* classifyHandle);
void NTAPI FwpsReleaseClassifyHandle0(UINT64 classifyHandle);
NTSTATUS NTAPI FwpsAcquireWritableLayerDataPointer0(UINT64 classifyHandle, UINT64 filterId, UINT32 flags,
                                                    PVOID* writableLayerData, FWPS_CLASSIFY_OUT0* classifyOut);
void NTAPI FwpsApplyModifiedLayerData0(UINT64 classifyHandle, PVOID modifiedLayerData, UINT32 flags);
NTSTATUS NTAPI FwpsRedirectHandleCreate0(const GUID* providerGuid, UINT32 flags, HANDLE* redirectHandle);
void NTAPI FwpsRedirectHandleDestroy0(HANDLE redirectHandle);
FWPS_CONNECTION_REDIRECT_STATE NTAPI FwpsQueryConnectionRedirectState0(HANDLE redirectRecords, HANDLE redirectHandle,
                                                                       void** redirectContext);

#endif /* !FWPSX_H */
#endif /* FWPS_PROTOTYPES_H */
