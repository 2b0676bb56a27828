"""What a callout reads at the redirect layers: field indices, metadata bits, value encodings.

Kernel-side constants, kept out of the Winsock contract (harness.winsock,
user mode only). Every value is the SDK's (docs/facts.md §5.9):

* FWPS_FIELD_ALE_CONNECT_REDIRECT_V4/V6_* and FWPS_FIELD_ALE_BIND_REDIRECT_V4/V6_*:
  the indices of `inFixedValues->incomingValue[]` (enums in km/fwpsk.h; the
  V4 and V6 enums have the same order). Pages:
  https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/fwpsk/ne-fwpsk-fwps_fields_ale_connect_redirect_v4_
  https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/fwpsk/ne-fwpsk-fwps_fields_ale_connect_redirect_v6_
  https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/fwpsk/ne-fwpsk-fwps_fields_ale_bind_redirect_v4_
* FWPS_METADATA_FIELD_*: the bits of `inMetaValues->currentMetadataValues`
  (km/fwpsk.h, the same in um/fwpsu.h), one bit each from DISCARD_REASON
  0x1 to SUB_PROCESS_TAG 0x80000000;
* FWP_* data types: the `type` of an FWP_VALUE0 (shared/fwptypes.h enum
  FWP_DATA_TYPE, the same in mingw-w64's fwptypes.h).
"""
from __future__ import annotations

# -- FWP_DATA_TYPE (fwptypes.h) ---------------------------------------------------------------
FWP_EMPTY = 0
FWP_UINT8 = 1
FWP_UINT16 = 2
FWP_UINT32 = 3
FWP_UINT64 = 4
FWP_BYTE_ARRAY16_TYPE = 11
FWP_BYTE_BLOB_TYPE = 12
FWP_TOKEN_ACCESS_INFORMATION_TYPE = 16

# -- incomingValue indices at ALE_CONNECT_REDIRECT_V4 and _V6 (same order) -----------------------
FWPS_FIELD_ALE_CONNECT_REDIRECT_ALE_APP_ID = 0
FWPS_FIELD_ALE_CONNECT_REDIRECT_ALE_USER_ID = 1
FWPS_FIELD_ALE_CONNECT_REDIRECT_IP_LOCAL_ADDRESS = 2
FWPS_FIELD_ALE_CONNECT_REDIRECT_IP_LOCAL_ADDRESS_TYPE = 3
FWPS_FIELD_ALE_CONNECT_REDIRECT_IP_LOCAL_PORT = 4
FWPS_FIELD_ALE_CONNECT_REDIRECT_IP_PROTOCOL = 5
FWPS_FIELD_ALE_CONNECT_REDIRECT_IP_REMOTE_ADDRESS = 6
FWPS_FIELD_ALE_CONNECT_REDIRECT_IP_DESTINATION_ADDRESS_TYPE = 7
FWPS_FIELD_ALE_CONNECT_REDIRECT_IP_REMOTE_PORT = 8
FWPS_FIELD_ALE_CONNECT_REDIRECT_FLAGS = 9
FWPS_FIELD_ALE_CONNECT_REDIRECT_ALE_ORIGINAL_APP_ID = 10
FWPS_FIELD_ALE_CONNECT_REDIRECT_ALE_PACKAGE_ID = 11
FWPS_FIELD_ALE_CONNECT_REDIRECT_ALE_SECURITY_ATTRIBUTE_FQBN_VALUE = 12
FWPS_FIELD_ALE_CONNECT_REDIRECT_COMPARTMENT_ID = 13
FWPS_FIELD_ALE_CONNECT_REDIRECT_MAX = 14          # the pages' enum (newer SDKs add PACKAGE_FAMILY_NAME)

# -- incomingValue indices at ALE_BIND_REDIRECT_V4 and _V6 ---------------------------------------
FWPS_FIELD_ALE_BIND_REDIRECT_ALE_APP_ID = 0
FWPS_FIELD_ALE_BIND_REDIRECT_ALE_USER_ID = 1
FWPS_FIELD_ALE_BIND_REDIRECT_IP_LOCAL_ADDRESS = 2
FWPS_FIELD_ALE_BIND_REDIRECT_IP_LOCAL_ADDRESS_TYPE = 3
FWPS_FIELD_ALE_BIND_REDIRECT_IP_LOCAL_PORT = 4
FWPS_FIELD_ALE_BIND_REDIRECT_IP_PROTOCOL = 5
FWPS_FIELD_ALE_BIND_REDIRECT_FLAGS = 6
FWPS_FIELD_ALE_BIND_REDIRECT_MAX = 10

# -- currentMetadataValues bits (fwpsk.h) ---------------------------------------------------------
FWPS_METADATA_FIELD_DISCARD_REASON = 0x00000001
FWPS_METADATA_FIELD_FLOW_HANDLE = 0x00000002
FWPS_METADATA_FIELD_IP_HEADER_SIZE = 0x00000004
FWPS_METADATA_FIELD_PROCESS_PATH = 0x00000008
FWPS_METADATA_FIELD_TOKEN = 0x00000010
FWPS_METADATA_FIELD_PROCESS_ID = 0x00000020
FWPS_METADATA_FIELD_SYSTEM_FLAGS = 0x00000040
FWPS_METADATA_FIELD_RESERVED = 0x00000080
FWPS_METADATA_FIELD_SOURCE_INTERFACE_INDEX = 0x00000100
FWPS_METADATA_FIELD_DESTINATION_INTERFACE_INDEX = 0x00000200
FWPS_METADATA_FIELD_TRANSPORT_HEADER_SIZE = 0x00000400
FWPS_METADATA_FIELD_COMPARTMENT_ID = 0x00000800
FWPS_METADATA_FIELD_FRAGMENT_DATA = 0x00001000
FWPS_METADATA_FIELD_PATH_MTU = 0x00002000
FWPS_METADATA_FIELD_COMPLETION_HANDLE = 0x00004000
FWPS_METADATA_FIELD_TRANSPORT_ENDPOINT_HANDLE = 0x00008000
FWPS_METADATA_FIELD_TRANSPORT_CONTROL_DATA = 0x00010000
FWPS_METADATA_FIELD_REMOTE_SCOPE_ID = 0x00020000
FWPS_METADATA_FIELD_PACKET_DIRECTION = 0x00040000
FWPS_METADATA_FIELD_PACKET_SYSTEM_CRITICAL = 0x00080000
FWPS_METADATA_FIELD_FORWARD_LAYER_OUTBOUND_PASS_THRU = 0x00100000
FWPS_METADATA_FIELD_FORWARD_LAYER_INBOUND_PASS_THRU = 0x00200000
FWPS_METADATA_FIELD_ALE_CLASSIFY_REQUIRED = 0x00400000
FWPS_METADATA_FIELD_TRANSPORT_HEADER_INCLUDE_HEADER = 0x00800000
FWPS_METADATA_FIELD_DESTINATION_PREFIX = 0x01000000
FWPS_METADATA_FIELD_ETHER_FRAME_LENGTH = 0x02000000
FWPS_METADATA_FIELD_PARENT_ENDPOINT_HANDLE = 0x04000000
FWPS_METADATA_FIELD_ICMP_ID_AND_SEQUENCE = 0x08000000
FWPS_METADATA_FIELD_LOCAL_REDIRECT_TARGET_PID = 0x10000000
FWPS_METADATA_FIELD_ORIGINAL_DESTINATION = 0x20000000
FWPS_METADATA_FIELD_REDIRECT_RECORD_HANDLE = 0x40000000
FWPS_METADATA_FIELD_SUB_PROCESS_TAG = 0x80000000

# The bits this model sets at the connect-redirect layers: the fields it fills. The page
# "Metadata fields at each filtering layer" lists for ALE_CONNECT_REDIRECT also TOKEN,
# PARENT_ENDPOINT_HANDLE, ICMP_ID_AND_SEQUENCE, LOCAL_REDIRECT_TARGET_PID and SUB_PROCESS_TAG;
# the model has no value for them, so their bits stay clear (a callout must check every bit).
CONNECT_REDIRECT_METADATA = (FWPS_METADATA_FIELD_PROCESS_ID | FWPS_METADATA_FIELD_PROCESS_PATH
                             | FWPS_METADATA_FIELD_TRANSPORT_ENDPOINT_HANDLE
                             | FWPS_METADATA_FIELD_REDIRECT_RECORD_HANDLE)
# ALE_BIND_REDIRECT: the same page lists no redirect-record handle there (docs/facts.md §5.1).
BIND_REDIRECT_METADATA = (FWPS_METADATA_FIELD_PROCESS_ID | FWPS_METADATA_FIELD_PROCESS_PATH
                          | FWPS_METADATA_FIELD_TRANSPORT_ENDPOINT_HANDLE)


def is_metadata_field_present(meta, field: int) -> bool:
    """FWPS_IS_METADATA_FIELD_PRESENT(meta, field) (fwpsk.h)."""
    return (meta.currentMetadataValues & field) == field


def app_id_blob(image_path: str) -> bytes:
    """FWPM_CONDITION_ALE_APP_ID's byte blob: the image's NT path, lower case, UTF-16LE with its
    terminating NUL (what FwpmGetAppIdFromFileName0 returns; docs/facts.md §5.9)."""
    return (image_path.lower() + "\0").encode("utf-16-le")


def image_path(process_name: str) -> str:
    """The NT path the model gives a process image (it has no file system): one volume, one folder."""
    return "\\device\\harddiskvolume1\\program files\\" + process_name + ".exe"
