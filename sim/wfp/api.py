"""The public callout API: model your own WFP connect-redirect callout and load it in a world.

This module is the stable surface for driver teams (docs/model-your-callout.md
is its guide); everything else under sim.wfp may change.

The classify contract
---------------------
A callout is any object with a `name` (how reports and diagnostics call it;
`install_callout` uses the vendor's name when it has none) and

    classify(inFixedValues, inMetaValues, layerData, classifyContext, filter, flowContext, classifyOut)

called with the classifyFn1 arguments, in the kernel's order:

* `inFixedValues` (FixedValues, read-only): FWPS_INCOMING_VALUES0. Named fields decoded for
  Python (`ip_remote_address` packed bytes in network order, `ip_remote_port`, `ip_protocol`,
  `flags`, `ale_app_id` ...) and `incomingValue[FWPS_FIELD_ALE_CONNECT_REDIRECT_*]` as the
  kernel encodes them (FwpValue(type, value); an IPv4 address is FWP_UINT32 in host order).
* `inMetaValues` (MetaValues, read-only): FWPS_INCOMING_METADATA_VALUES0. Read a member only
  when `is_metadata_field_present(inMetaValues, FWPS_METADATA_FIELD_...)` says it is set:
  PROCESS_ID (`processId`), PROCESS_PATH (`processPath`), TRANSPORT_ENDPOINT_HANDLE and
  REDIRECT_RECORD_HANDLE (`redirectRecords`, None when nobody redirected the flow).
* `layerData` (ConnectRequest0, read it, never write it): the current version of
  FWPS_CONNECT_REQUEST0. To change the connection, acquire a writable copy.
* `classifyContext`: opaque; pass it to FwpsAcquireClassifyHandle0.
* `filter` (Filter): `filterId` (pass it to the acquire; it becomes `modifierFilterId`),
  `flags`, `weight`.
* `flowContext`: 0 (no flow contexts at these layers).
* `classifyOut` (ClassifyOut, write it): `actionType` (FWP_ACTION_PERMIT / BLOCK / CONTINUE),
  `rights` (FWPS_RIGHT_ACTION_WRITE), `flags`.

The Fwps* functions (`driver.fwps`, FwpsFunctions) keep the kernel's names and argument
order; out-parameters come back in a tuple after the NTSTATUS, void functions return None:

    FwpsRedirectHandleCreate0(providerGuid, flags)                 -> (NTSTATUS, RedirectHandle)
    FwpsRedirectHandleDestroy0(redirectHandle)                     -> None
    FwpsQueryConnectionRedirectState0(redirectRecords, redirectHandle, want_context=False)
                                                                   -> (FWPS_CONNECTION_REDIRECT_STATE, context or None)
    FwpsQueryConnectionSioFormatRedirectRecords0(redirectRecords, outputBufferLength)
                                                                   -> (NTSTATUS, blob, or the size needed)
    FwpsAcquireClassifyHandle0(classifyContext, flags)             -> (NTSTATUS, classifyHandle)
    FwpsReleaseClassifyHandle0(classifyHandle)                     -> None
    FwpsAcquireWritableLayerDataPointer0(classifyHandle, filterId, flags, classifyOut)
                                                                   -> (NTSTATUS, ConnectRequest0)
    FwpsApplyModifiedLayerData0(classifyHandle, modifiedLayerData, flags) -> None
    FwpsPendClassify0(classifyHandle, filterId, flags, classifyOut) -> NTSTATUS
    FwpsCompleteClassify0(classifyHandle, flags, classifyOut)      -> None

The rules the engine holds a callout to (the acquire sets BLOCK and clears WRITE, every acquire
needs one apply, a local redirect needs a redirect handle and a target PID ...) are in the
guide, with the diagnostic each broken rule leaves in `world.kernel.diagnostics`.

Loading and reading
-------------------
`install_callout(world, host, make_callout, vendor=...)` does what a driver's DriverEntry and
its FWPM calls do: provider, sublayer with its weight, one redirect handle, the callout, and a
filter at ALE_CONNECT_REDIRECT_V4 and _V6. `story(world)` tells what became of every redirected
connection (verdict, hops, loop chain, bytes intact) in any world.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable, Protocol

from harness.winsock.constants import (  # noqa: F401  (re-exported: what a callout compares with)
    FWP_ACTION_BLOCK, FWP_ACTION_CONTINUE, FWP_ACTION_PERMIT, FWP_CONDITION_FLAG_IS_CONNECTION_REDIRECTED,
    FWP_CONDITION_FLAG_IS_LOOPBACK, FWP_CONDITION_FLAG_IS_REAUTHORIZE, FWPS_CLASSIFY_FLAG_REAUTHORIZE_IF_MODIFIED_BY_OTHERS,
    FWPS_CONNECTION_NOT_REDIRECTED, FWPS_CONNECTION_PREVIOUSLY_REDIRECTED_BY_SELF,
    FWPS_CONNECTION_REDIRECTED_BY_OTHER, FWPS_CONNECTION_REDIRECTED_BY_SELF, FWPS_LAYER_ALE_CONNECT_REDIRECT_V4,
    FWPS_LAYER_ALE_CONNECT_REDIRECT_V6, FWPS_RIGHT_ACTION_WRITE, IPPROTO_TCP, IPPROTO_UDP, STATUS_SUCCESS)
from harness.winsock.sockaddr import ip_bytes, ip_text
from sim.net import LOOP4, LOOP6, unmap
from sim.wfp.engine import (  # noqa: F401  (re-exported: the structures a callout sees)
    ClassifyOut, ConnectRequest0, Filter, FilterEngine, FixedValues, FwpValue, MetaValues, Provider,
    RecordsHandle, RedirectHandle, SubLayer)
from sim.wfp.engine import CONNECT_LAYERS, Fwps as FwpsFunctions
from sim.wfp.fields import *  # noqa: F401,F403  (the FWPS_FIELD_*, FWPS_METADATA_FIELD_*, FWP_* values)
from sim.wfp.fields import FWPS_METADATA_FIELD_PROCESS_ID, is_metadata_field_present
from sim.wfp.story import Connection, Story, story  # noqa: F401


class Callout(Protocol):
    """What install_callout loads: a name and a classifyFn."""
    name: str

    def classify(self, inFixedValues: FixedValues, inMetaValues: MetaValues, layerData: ConnectRequest0,
                 classifyContext: object, filter: Filter, flowContext: int, classifyOut: ClassifyOut) -> None: ...


@dataclass
class Driver:
    """One vendor's callout driver, loaded on one host."""
    vendor: str                      # the FWPM provider's name: what reports call the vendor
    host: object
    engine: FilterEngine
    provider: Provider
    sublayer: SubLayer
    redirect_handle: RedirectHandle  # FwpsRedirectHandleCreate0 with the provider's key, made once
    callout: object = None
    filters: tuple = ()

    @property
    def fwps(self) -> FwpsFunctions:
        """The Fwps* functions, as the callout calls them."""
        return self.engine.fwps

    def unload(self) -> None:
        """What the driver's unload does: its filters go, then FwpsRedirectHandleDestroy0."""
        for flt in self.filters:
            self.engine.delete_filter(flt)
        self.filters = ()
        self.engine.fwps.FwpsRedirectHandleDestroy0(self.redirect_handle)


def install_callout(world, host, make_callout: Callable[[Driver], Callout], *, vendor: str,
                    provider_key=None, sublayer_weight: int = 0x7F00, filter_weight: int = 10,
                    protocols=(IPPROTO_TCP, IPPROTO_UDP), layers=CONNECT_LAYERS) -> Driver:
    """Load one vendor's callout on `host` and return its Driver.

    `make_callout(driver)` builds the callout once the driver has its Fwps functions and its
    redirect handle (a callout keeps both, as a driver keeps them in globals). The sublayer's
    weight orders vendors: the heavier sublayer classifies first (Filter Arbitration). The
    provider key defaults to one derived from the vendor's name, so a vendor's handle is the
    same in every world.
    """
    engine = world.wfp(host)
    key = uuid.UUID(str(provider_key)) if provider_key else uuid.uuid5(uuid.NAMESPACE_DNS, f"{vendor}.wfp.example")
    provider = engine.add_provider(key, vendor)
    sublayer = engine.add_sublayer(uuid.uuid5(key, "sublayer"), f"{vendor} redirect", sublayer_weight, provider)
    engine.current_callout = vendor
    try:
        status, handle = engine.fwps.FwpsRedirectHandleCreate0(provider.key, 0)
    finally:
        engine.current_callout = ""
    if status != STATUS_SUCCESS:
        raise RuntimeError(f"{vendor}: FwpsRedirectHandleCreate0 failed 0x{status:08X}")
    driver = Driver(vendor, host, engine, provider, sublayer, handle)
    callout = make_callout(driver)
    name = getattr(callout, "name", "") or vendor
    filters = []
    for layer in layers:
        flt = engine.add_filter(f"{vendor} redirect", layer, sublayer, filter_weight, callout, protocols=protocols)
        flt.callout_name = name
        filters.append(flt)
    driver.callout, driver.filters = callout, tuple(filters)
    return driver


# -- typed accessors ------------------------------------------------------------------------------

def process_id(meta: MetaValues):
    """inMetaValues->processId when FWPS_METADATA_FIELD_PROCESS_ID is set, else None."""
    return meta.processId if is_metadata_field_present(meta, FWPS_METADATA_FIELD_PROCESS_ID) else None


def endpoint(address_and_port) -> tuple:
    """(ip text, port) of a SOCKADDR_STORAGE-like (packed address, port) pair of the layer data;
    a v4-mapped address (a dual-mode socket's form) is shown as IPv4."""
    ip, port = address_and_port
    return ip_text(unmap(ip)), port


def remote_endpoint(fixed: FixedValues) -> tuple:
    """(ip text, port) the connect asks for, from the fixed values."""
    return ip_text(fixed.ip_remote_address), fixed.ip_remote_port


def address(text: str) -> bytes:
    """The packed form the layer data holds for an address written as text ('127.0.0.1', '::1')."""
    return ip_bytes(text)


def loopback_like(address_and_port, port: int) -> tuple:
    """Loopback of the same family as `address_and_port`, with `port`: what classify.c's
    WfprcSetLoopback writes (an AF_INET6 SOCKADDR_STORAGE gets ::1, an AF_INET one 127.0.0.1)."""
    return (LOOP6 if len(address_and_port[0]) == 16 else LOOP4), port
