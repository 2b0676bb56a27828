"""A host's WFP filter engine at the ALE connect-redirect layers, and the Fwps* kernel API.

Modelled on the kernel API (docs/facts.md §5): providers, sublayers ordered by
weight, filters ordered by weight inside a sublayer, callouts with a
`classify(fixed, meta, layer_data, classify_context, filter, flow_context,
classify_out)` method. A callout changes the connection through
acquire/apply of writable layer data: each apply makes a new version of the
FWPS_CONNECT_REQUEST0 whose previousVersion is the one before and whose
modifierFilterId names the filter. After classification the redirections
(versions carrying a localRedirectHandle) are appended to the flow's
records (sim.wfp.flows), and the connection goes to the last version's
remote address.

Arbitration (learn.microsoft.com "Filter Arbitration", docs/facts.md §5.5): every
sublayer is evaluated, highest weight first; inside a sublayer the first
terminating action (PERMIT/BLOCK) ends it, CONTINUE goes on. BLOCK from any
sublayer wins. A sublayer that ends with FWPS_RIGHT_ACTION_WRITE cleared
hands the next sublayers a classifyOut without the right.

Misbehaving callouts get the status the kernel API documents (or, for the
void functions, a diagnostic naming the callout), and the world keeps
running. Every way a callout can make a connection fail gets a diagnostic
in `world.kernel.diagnostics` (docs/model-your-callout.md tables them).

The public face of all this, for users' own callouts, is `sim.wfp.api`.
"""
from __future__ import annotations

import itertools
import traceback
import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

import functools

from harness.winsock import constants as C
from sim.decision_points import DECISIONS
from sim.net import ANY4, ANY6, is_loopback, is_v4_mapped, unmap, v4_mapped
from sim.wfp import fields as F
from sim.wfp.records import RedirectEntry
from sim.wfp.flows import FlowRedirect, redirect_state
from sim.wfp.hops import endpoint_text as _text

_V4_LAYER_MAPPED = DECISIONS["wfp_v4_layer_dual_stack"].choice("mapped")

STATUS_SUCCESS = C.STATUS_SUCCESS
STATUS_INVALID_PARAMETER = C.STATUS_INVALID_PARAMETER
STATUS_BUFFER_TOO_SMALL = C.STATUS_BUFFER_TOO_SMALL
STATUS_NOT_FOUND = C.STATUS_NOT_FOUND
STATUS_FWP_WRITE_ALREADY_ACQUIRED = 0xC022003D   # ntstatus.h: another callout holds the writable data
STATUS_FWP_NULL_POINTER = 0xC0220016

_new_tuple = tuple.__new__


@dataclass
class Provider:
    key: uuid.UUID
    name: str


@dataclass
class SubLayer:
    key: uuid.UUID
    name: str
    weight: int
    provider: Provider = None


@dataclass
class Filter:
    filterId: int
    name: str
    layerId: int
    sublayer: SubLayer
    weight: int
    callout: object
    protocols: frozenset = frozenset()     # empty: every protocol
    flags: int = 0
    callout_name: str = field(init=False, repr=False, compare=False)   # for diagnostics and reports

    def __post_init__(self):
        self.callout_name = getattr(self.callout, "name", type(self.callout).__name__)


@dataclass(slots=True)
class ClassifyOut:
    """FWPS_CLASSIFY_OUT0."""
    actionType: int = C.FWP_ACTION_CONTINUE
    outContext: int = 0
    filterId: int = 0
    rights: int = C.FWPS_RIGHT_ACTION_WRITE
    flags: int = 0
    reserved: int = 0


@dataclass(slots=True)
class ConnectRequest0:
    """FWPS_CONNECT_REQUEST0 (fwpsk.h): one version of the connection being classified."""
    localAddressAndPort: tuple
    remoteAddressAndPort: tuple
    portReservationToken: int = 0
    localRedirectTargetPID: int = 0
    previousVersion: "ConnectRequest0" = None
    modifierFilterId: int = 0
    localRedirectHandle: object = None
    localRedirectContext: bytes = None
    localRedirectContextSize: int = 0


@dataclass
class BindRequest0:
    """FWPS_BIND_REQUEST0 (fwpsk.h): one version of the bind being classified."""
    localAddressAndPort: tuple
    portReservationToken: int = 0
    previousVersion: "BindRequest0" = None
    modifierFilterId: int = 0

    @property
    def remoteAddressAndPort(self):          # not a field of the bind layer; classify sees none
        return (bytes(len(self.localAddressAndPort[0])), 0)


def writable_copy(previous, filter_id: int):
    """The new version FwpsAcquireWritableLayerDataPointer0 hands out: the fields a callout may
    change, copied; previousVersion and modifierFilterId set (docs/facts.md §5.2)."""
    if isinstance(previous, BindRequest0):
        return BindRequest0(previous.localAddressAndPort, previous.portReservationToken,
                            previousVersion=previous, modifierFilterId=filter_id)
    return ConnectRequest0(previous.localAddressAndPort, previous.remoteAddressAndPort,
                           previous.portReservationToken, previous.localRedirectTargetPID,
                           previousVersion=previous, modifierFilterId=filter_id)


class FwpValue(NamedTuple):
    """FWP_VALUE0: a data type (sim.wfp.fields FWP_*) and the value in that type's encoding."""
    type: int
    value: object


_EMPTY = FwpValue(F.FWP_EMPTY, None)
_BIND_LAYER_IDS = (C.FWPS_LAYER_ALE_BIND_REDIRECT_V4, C.FWPS_LAYER_ALE_BIND_REDIRECT_V6)


def _address_value(raw: bytes) -> FwpValue:
    # FWP_UINT32 in host byte order for IPv4, FWP_BYTE_ARRAY16_TYPE (network order) for IPv6.
    if len(raw) == 4:
        return FwpValue(F.FWP_UINT32, int.from_bytes(raw, "big"))
    return FwpValue(F.FWP_BYTE_ARRAY16_TYPE, raw)


def _address_type(raw: bytes) -> FwpValue:
    # NL_ADDRESS_TYPE: NlatUnspecified 0, NlatUnicast 1 (every other address this model has).
    return FwpValue(F.FWP_UINT8, 0 if raw in (ANY4, ANY6) else 1)


class FixedValues(NamedTuple):
    """FWPS_INCOMING_VALUES0 at the redirect layers (read-only), decoded and kernel-encoded.

    The named fields are the values decoded for Python: addresses as packed bytes in network
    order (4 bytes at the V4 layers, 16 at the V6 layers; never v4-mapped), ports and the
    protocol as ints, `flags` the FWP_CONDITION_FLAG_* bits, `ale_app_id` the FWP_BYTE_BLOB
    bytes (the image's NT path, lower case, UTF-16LE with its NUL: sim.wfp.fields.app_id_blob).
    `incomingValue[FWPS_FIELD_...]` holds the same values as the kernel encodes them
    (FwpValue(type, value); IPv4 addresses as FWP_UINT32 in host byte order), indexed by the
    layer's FWPS_FIELD_ALE_CONNECT_REDIRECT_* / _BIND_REDIRECT_* enum (sim.wfp.fields;
    docs/facts.md §5.9). Fields the model has no value for are FWP_EMPTY.
    """
    layerId: int
    ip_protocol: int
    ip_local_address: bytes
    ip_local_port: int
    ip_remote_address: bytes
    ip_remote_port: int
    flags: int
    ale_app_id: bytes = b""

    @property
    def valueCount(self) -> int:
        return F.FWPS_FIELD_ALE_BIND_REDIRECT_MAX if self.layerId in _BIND_LAYER_IDS \
            else F.FWPS_FIELD_ALE_CONNECT_REDIRECT_MAX

    @property
    def incomingValue(self) -> tuple:
        """The kernel's incomingValue array (built on demand: most callouts read the named fields)."""
        app = FwpValue(F.FWP_BYTE_BLOB_TYPE, self.ale_app_id)
        local = [app, _EMPTY, _address_value(self.ip_local_address), _address_type(self.ip_local_address),
                 FwpValue(F.FWP_UINT16, self.ip_local_port), FwpValue(F.FWP_UINT8, self.ip_protocol)]
        flags = FwpValue(F.FWP_UINT32, self.flags)
        if self.layerId in _BIND_LAYER_IDS:
            values = local + [flags]
        else:
            values = local + [_address_value(self.ip_remote_address), _address_type(self.ip_remote_address),
                              FwpValue(F.FWP_UINT16, self.ip_remote_port), flags]
        return tuple(values + [_EMPTY] * (self.valueCount - len(values)))


class MetaValues(NamedTuple):
    """FWPS_INCOMING_METADATA_VALUES0 at the redirect layers (read-only).

    A member holds a value only when its FWPS_METADATA_FIELD_* bit is set in
    `currentMetadataValues` (the structure's page); sim.wfp.fields lists the bits and which
    ones this model sets. `processId` is the connecting process's PID (UINT64), `processPath`
    the FWP_BYTE_BLOB of its image path (the app id's encoding), `transportEndpointHandle`
    the socket's ALE endpoint handle, `redirectRecords` the flow's RecordsHandle or None
    (NULL) when no callout has redirected it.
    """
    processId: int
    redirectRecords: object
    transportEndpointHandle: int
    currentMetadataValues: int = F.CONNECT_REDIRECT_METADATA
    processPath: bytes = b""


@functools.lru_cache(maxsize=1024)      # a run has few process names
def _app_id(process_name: str) -> bytes:
    return F.app_id_blob(F.image_path(process_name))


@dataclass(frozen=True, slots=True)
class RecordsHandle:
    """The kernel handle to a flow's redirect records (inMetaValues->redirectRecords)."""
    entries: tuple
    contexts: dict = field(default_factory=dict, compare=False)
    flow_id: int = 0


class RedirectHandle:
    _ids = itertools.count(0xFFFF_A000_0000_1000, 0x40)

    def __init__(self, provider_key: uuid.UUID, owner: str):
        self.id = next(self._ids)
        self.provider = provider_key
        self.owner = owner
        self.destroyed = False

    def __repr__(self) -> str:
        return f"<RedirectHandle 0x{self.id:x} of {self.owner}>"


@dataclass(slots=True)
class StateSeen:
    """A FwpsQueryConnectionRedirectState0 call a callout made, for reports: the callout's name,
    the provider (vendor) whose redirect handle it passed, and the answer."""
    callout: str
    state: int
    vendor: str = ""


class Classification:
    """One classify of one connect (or UDP flow): the classifyContext handed to callouts."""

    def __init__(self, engine, request, proceed, protocol, family):
        self.engine = engine
        self.request = request             # sim.socket.ConnectRequest
        self.proceed = proceed
        self.protocol = protocol
        self.family = family
        self.base = None
        self.current = None                # the newest ConnectRequest0
        self.acquired = {}                 # classify handle -> (callout name, writable or None)
        self.pended = None                 # classify handle while pended
        self.states_seen: list[StateSeen] = []
        self.reauth_requested = False
        self.modified_after_reauth_flag = False
        self.flags = 0
        self.gen = None
        self.blocked = False
        self.layers = None                 # the (V4, V6) layers; None: the connect-redirect ones
        self.acquire_blocked = False       # the last acquire set classifyOut to BLOCK


class Fwps:
    """The Fwps*0 functions a callout calls; out-parameters come back in a tuple."""

    def __init__(self, engine):
        self._engine = engine
        self._classify_handles = {}
        self._next_handle = itertools.count(0x1000)

    # -- redirect handles -------------------------------------------------
    def FwpsRedirectHandleCreate0(self, providerGuid, flags=0):
        if not isinstance(providerGuid, uuid.UUID) or flags != 0:
            return STATUS_INVALID_PARAMETER, None
        handle = RedirectHandle(providerGuid, self._engine.current_callout or str(providerGuid))
        self._engine.redirect_handles[handle.id] = handle
        return STATUS_SUCCESS, handle

    def FwpsRedirectHandleDestroy0(self, redirectHandle):
        if isinstance(redirectHandle, RedirectHandle):
            redirectHandle.destroyed = True

    def FwpsQueryConnectionRedirectState0(self, redirectRecords, redirectHandle, want_context=False):
        """(state, context); context only for BY_SELF / PREVIOUSLY_BY_SELF (DDI page)."""
        engine = self._engine
        if redirectRecords is None or not isinstance(redirectHandle, RedirectHandle):
            state, context = C.FWPS_CONNECTION_NOT_REDIRECTED, None
        else:
            state = redirect_state(redirectRecords.entries, redirectHandle.id)
            context = None
            if want_context and state in (C.FWPS_CONNECTION_REDIRECTED_BY_SELF,
                                          C.FWPS_CONNECTION_PREVIOUSLY_REDIRECTED_BY_SELF):
                for i in range(len(redirectRecords.entries) - 1, -1, -1):
                    if redirectRecords.entries[i].redirect_handle == redirectHandle.id:
                        context = redirectRecords.contexts.get(i)
                        break
        cls = engine.active
        if cls is not None:
            provider = engine.providers.get(redirectHandle.provider) if isinstance(redirectHandle, RedirectHandle) \
                else None
            cls.states_seen.append(StateSeen(engine.current_callout, state, provider.name if provider else ""))
        return state, context

    def FwpsQueryConnectionSioFormatRedirectRecords0(self, redirectRecords, outputBufferLength):
        """(status, blob or required size): the blob user mode passes to SIO_SET_..."""
        if redirectRecords is None:
            return STATUS_NOT_FOUND, 0
        from sim.wfp import records
        data = records.encode(redirectRecords.flow_id, redirectRecords.entries, self._engine.host.records_key)
        if outputBufferLength < len(data):
            return STATUS_BUFFER_TOO_SMALL, len(data)
        return STATUS_SUCCESS, data

    # -- classify handles ---------------------------------------------------
    def FwpsAcquireClassifyHandle0(self, classifyContext, flags=0):
        if not isinstance(classifyContext, Classification) or flags != 0:
            return STATUS_INVALID_PARAMETER, 0
        handle = next(self._next_handle)
        self._classify_handles[handle] = classifyContext
        classifyContext.acquired[handle] = [self._engine.current_callout, None]
        return STATUS_SUCCESS, handle

    def FwpsReleaseClassifyHandle0(self, classifyHandle):
        cls = self._classify_handles.pop(classifyHandle, None)
        if cls is None:
            self._engine.diagnose("classify-handle", f"released classify handle 0x{classifyHandle:x} "
                                  f"that is not held")
            return
        slot = cls.acquired.pop(classifyHandle, None)
        if slot and slot[1] is not None:
            self._engine.diagnose("writable-not-applied", "released a classify handle whose writable layer "
                                  "data was never applied (docs/facts.md §5.3: every acquire needs an apply)")

    def FwpsAcquireWritableLayerDataPointer0(self, classifyHandle, filterId, flags, classifyOut):
        cls = self._classify_handles.get(classifyHandle)
        if cls is None or flags != 0:
            return STATUS_INVALID_PARAMETER, None
        if any(slot[1] is not None for slot in cls.acquired.values()):
            return STATUS_FWP_WRITE_ALREADY_ACQUIRED, None
        writable = writable_copy(cls.current, filterId)
        cls.acquired[classifyHandle][1] = writable
        if classifyOut is not None:
            # DDI page: the acquire sets BLOCK and clears the write right.
            classifyOut.actionType = C.FWP_ACTION_BLOCK
            classifyOut.rights &= ~C.FWPS_RIGHT_ACTION_WRITE
            cls.acquire_blocked = True
        return STATUS_SUCCESS, writable

    def FwpsApplyModifiedLayerData0(self, classifyHandle, modifiedLayerData, flags=0):
        cls = self._classify_handles.get(classifyHandle)
        slot = cls.acquired.get(classifyHandle) if cls else None
        if slot is None or slot[1] is None or slot[1] is not modifiedLayerData:
            self._engine.diagnose("apply-without-acquire", "applied layer data it did not acquire with "
                                  "this classify handle; ignored")
            return
        slot[1] = None
        if flags & C.FWPS_CLASSIFY_FLAG_REAUTHORIZE_IF_MODIFIED_BY_OTHERS:
            cls.reauth_requested = True
        elif cls.reauth_requested:
            cls.modified_after_reauth_flag = True
        cls.current = modifiedLayerData

    def FwpsPendClassify0(self, classifyHandle, filterId, flags, classifyOut):
        cls = self._classify_handles.get(classifyHandle)
        if cls is None:
            return STATUS_INVALID_PARAMETER
        cls.pended = classifyHandle
        if classifyOut is not None:
            classifyOut.actionType = C.FWP_ACTION_BLOCK
            classifyOut.flags |= C.FWPS_CLASSIFY_OUT_FLAG_ABSORB
        return STATUS_SUCCESS

    def FwpsCompleteClassify0(self, classifyHandle, flags, classifyOut):
        cls = self._classify_handles.get(classifyHandle)
        if cls is None or cls.pended != classifyHandle:
            self._engine.diagnose("complete-not-pended", f"completed classify handle 0x{classifyHandle:x} "
                                  "that was not pended")
            return
        cls.pended = None
        self._engine.resume(cls, classifyOut)


CONNECT_LAYERS = (C.FWPS_LAYER_ALE_CONNECT_REDIRECT_V4, C.FWPS_LAYER_ALE_CONNECT_REDIRECT_V6)
BIND_LAYERS = (C.FWPS_LAYER_ALE_BIND_REDIRECT_V4, C.FWPS_LAYER_ALE_BIND_REDIRECT_V6)


class FilterEngine:
    """One host's base filtering engine for the redirect layers."""

    def __init__(self, host, world):
        self.host = host
        self.world = world
        self.providers: dict = {}
        self.sublayers: dict = {}
        self.filters: list[Filter] = []
        self._plans: dict = {}            # evaluation orders and lookups by layer; cleared when filters change
        self.redirect_handles: dict = {}
        self._filter_ids = itertools.count(70000)
        self.fwps = Fwps(self)
        self.current_callout = ""
        self.active = None
        host.connect_redirect = self.classify
        host.bind_redirect = self.classify_bind

    # -- management (FwpmProviderAdd0, FwpmSubLayerAdd0, FwpmFilterAdd0) ----
    def add_provider(self, key, name: str) -> Provider:
        provider = Provider(uuid.UUID(str(key)), name)
        self.providers[provider.key] = provider
        return provider

    def add_sublayer(self, key, name: str, weight: int, provider: Provider = None) -> SubLayer:
        sub = SubLayer(uuid.UUID(str(key)), name, weight, provider)
        self.sublayers[sub.key] = sub
        return sub

    def add_filter(self, name: str, layer: int, sublayer: SubLayer, weight: int, callout,
                   protocols=(), flags: int = 0) -> Filter:
        if layer not in CONNECT_LAYERS + BIND_LAYERS:
            raise ValueError(f"layer {layer}: only the connect- and bind-redirect layers are modelled")
        flt = Filter(next(self._filter_ids), name, layer, sublayer, weight, callout, frozenset(protocols), flags)
        self.filters.append(flt)
        self._plans.clear()
        return flt

    def delete_filter(self, flt: Filter) -> None:
        self.filters.remove(flt)
        self._plans.clear()

    def _plan(self, layer: int, protocol: int) -> list:
        """[(sublayer, its filters for this layer and protocol)], in evaluation order (cached)."""
        key = (layer, protocol)
        plan = self._plans.get(key)
        if plan is None:
            subs = sorted({f.sublayer.key: f.sublayer for f in self.filters}.values(), key=lambda s: -s.weight)
            plan = self._plans[key] = [
                (sub, sorted((f for f in self.filters if f.sublayer is sub and f.layerId == layer
                              and (not f.protocols or protocol in f.protocols)), key=lambda f: -f.weight))
                for sub in subs]
        return plan

    def _any_filter_at(self, layers: tuple) -> bool:
        """Does any filter sit at one of `layers`? (cached with the plans)"""
        key = ("any", layers)
        found = self._plans.get(key)
        if found is None:
            found = self._plans[key] = any(f.layerId in layers for f in self.filters)
        return found

    def diagnose(self, kind: str, message: str) -> None:
        self.world.kernel.note(f"callout:{kind}", f"{self.current_callout or 'callout'} on "
                               f"{self.host.name}: {message}")

    # -- classification -----------------------------------------------------
    def classify(self, request, proceed, protocol=C.IPPROTO_TCP) -> None:
        """Run the connect-redirect layer for `request`, then call proceed(error or 0)."""
        family = C.AF_INET if len(unmap(request.remote[0])) == 4 else C.AF_INET6
        cls = Classification(self, request, proceed, protocol, family)
        sock = request.socket
        previous = request.meta.get("records") or sock.redirect_records
        records = RecordsHandle(tuple(previous[1]), {}, previous[0]) if previous else None
        cls.records = records
        local, remote = request.local, request.remote
        if family == C.AF_INET and sock.family == C.AF_INET6 and \
                self.world.profile.wfp_v4_layer_dual_stack != _V4_LAYER_MAPPED:
            # A dual-mode socket at the V4 layer: its addresses in the layer's family (docs/facts.md §5.9).
            remote = (unmap(remote[0]), remote[1])
            local = (unmap(local[0]) if is_v4_mapped(local[0]) or len(local[0]) == 4 else ANY4, local[1])
        cls.base = cls.current = ConnectRequest0(local, remote)
        cls.gen = self._run(cls)
        self._advance(cls)

    def resume(self, cls: Classification, classify_out) -> None:
        self._advance(cls, classify_out, first=False)

    def _advance(self, cls, value=None, first=True) -> None:
        """Run the classification until it ends or a callout pends it."""
        try:
            if first:
                next(cls.gen)
            else:
                cls.gen.send(value)
        except StopIteration:
            self._finish(cls)

    def classify_bind(self, request) -> int:
        """ALE_BIND_REDIRECT: callouts may change the local address and port of a bind.

        Returns 0 (request.local possibly rewritten) or WSAEACCES when blocked.
        Changes apply to every connection of the socket (HOWTO). A pended bind
        classify is not modelled: it is refused with a diagnostic.
        """
        if not self._any_filter_at(BIND_LAYERS):
            return 0
        family = C.AF_INET if len(unmap(request.local[0])) == 4 else C.AF_INET6
        cls = Classification(self, request, None, request.socket.protocol, family)
        cls.layers = BIND_LAYERS
        cls.records = None
        cls.base = cls.current = BindRequest0(request.local)
        gen = self._run(cls)
        try:
            next(gen)
        except StopIteration:
            if cls.blocked:
                return C.WSAEACCES
            request.local = cls.current.localAddressAndPort
            return 0
        self.diagnose("bind-pend", "pended a bind-redirect classify (not modelled): bind refused")
        return C.WSAEACCES

    def _layer(self, cls: Classification) -> int:
        pair = cls.layers or CONNECT_LAYERS
        return pair[0] if cls.family == C.AF_INET else pair[1]

    def _run(self, cls: Classification):
        layer = self._layer(cls)
        for attempt in range(2):                      # the second pass is a reauthorization
            rights = C.FWPS_RIGHT_ACTION_WRITE
            for _sub, filters in self._plan(layer, cls.protocol):
                out = ClassifyOut(rights=rights)
                for flt in filters:
                    out.filterId = flt.filterId
                    done = yield from self._call(cls, flt, out, attempt)
                    if cls.blocked:
                        return
                    if done:
                        break
                if out.actionType == C.FWP_ACTION_BLOCK:
                    cls.blocked = True
                    return
                rights = out.rights & C.FWPS_RIGHT_ACTION_WRITE
            if not (cls.reauth_requested and cls.modified_after_reauth_flag):
                return
            cls.flags |= C.FWP_CONDITION_FLAG_IS_REAUTHORIZE
            cls.reauth_requested = cls.modified_after_reauth_flag = False

    def _call(self, cls, flt, out, attempt):
        """Invoke one callout; yields while it is pended; returns True when the sublayer is decided."""
        request = cls.request
        plain_local, plain_remote = unmap(cls.current.localAddressAndPort[0]), unmap(cls.current.remoteAddressAndPort[0])
        flags = cls.flags
        if is_loopback(plain_remote):
            flags |= C.FWP_CONDITION_FLAG_IS_LOOPBACK
        if cls.records is not None:
            flags |= C.FWP_CONDITION_FLAG_IS_CONNECTION_REDIRECTED
        app_id = _app_id(request.process.name)
        # tuple.__new__ with every field: what the named tuples' own __new__ does, without its Python frame.
        fixed = _new_tuple(FixedValues, (flt.layerId, cls.protocol, plain_local, cls.current.localAddressAndPort[1],
                                         plain_remote, cls.current.remoteAddressAndPort[1], flags, app_id))
        meta = _new_tuple(MetaValues, (request.process.pid, cls.records, request.socket.endpoint_handle,
                                       F.BIND_REDIRECT_METADATA if cls.layers else F.CONNECT_REDIRECT_METADATA,
                                       app_id))
        name = flt.callout_name
        self.current_callout, self.active = name, cls
        cls.acquire_blocked = False
        before = tuple(cls.acquired) if cls.acquired else ()     # handles held before this callout (usually none)
        try:
            flt.callout.classify(fixed, meta, cls.current, cls, flt, 0, out)
        except Exception as exc:    # a bug in a user's callout is a bugcheck on Windows: keep it, block the flow
            self.diagnose("crashed", f"classify raised {type(exc).__name__}: {exc}\n"
                          + "".join(traceback.format_exception(exc)[-3:]))
            cls.blocked = True
            return True
        finally:
            self.current_callout, self.active = "", None
        pended = cls.pended
        if pended is not None:
            self.current_callout = name
            completion_out = yield           # FwpsCompleteClassify0 resumes us with its classifyOut
            self.current_callout = ""
            if completion_out is not None:
                out.actionType, out.rights = completion_out.actionType, completion_out.rights
            # The HOWTO releases the pended handle after FwpsCompleteClassify0 returns: look once it has.
            self.world.kernel.scheduler.call_soon(lambda: self._check_released(cls, pended, name), "wfp-leak")
        for handle, slot in list(cls.acquired.items()) if cls.acquired else ():
            if handle in before or handle == pended:
                continue
            self.current_callout = name
            if slot[1] is not None:
                self.diagnose("writable-not-applied", "returned without applying the writable layer data it "
                              "acquired; the classify cannot complete (docs/facts.md §5.3): connection blocked")
                cls.blocked = True
            self.diagnose("classify-handle-leaked", "returned without releasing its classify handle")
            self.fwps._classify_handles.pop(handle, None)
            cls.acquired.pop(handle, None)
            self.current_callout = ""
        action = out.actionType
        if action == C.FWP_ACTION_BLOCK and not cls.blocked:
            self.current_callout = name
            if cls.acquire_blocked:
                self.diagnose("left-block", "returned FWP_ACTION_BLOCK, the action FwpsAcquireWritableLayerData"
                              "Pointer0 put in classifyOut (docs/facts.md §5.3): connection blocked; set "
                              "FWP_ACTION_PERMIT after the apply to let it through")
            else:
                self.diagnose("blocked", "returned FWP_ACTION_BLOCK: connection blocked")
            self.current_callout = ""
        return action in (C.FWP_ACTION_PERMIT, C.FWP_ACTION_BLOCK) or cls.blocked

    def _check_released(self, cls, handle, name) -> None:
        if handle in cls.acquired:
            self.current_callout = name
            self.diagnose("classify-handle-leaked", "never released the classify handle it pended")
            self.fwps._classify_handles.pop(handle, None)
            cls.acquired.pop(handle, None)
            self.current_callout = ""

    def _finish(self, cls: Classification) -> None:
        request = cls.request
        tcp = cls.protocol == C.IPPROTO_TCP
        request.meta["wfp_states"] = cls.states_seen
        if cls.blocked:
            self.world.hops.refused(request, cls.states_seen, "blocked by a callout", tcp)
            cls.proceed(C.WSAEACCES)
            return
        versions = []
        v = cls.current
        while v is not None and v is not cls.base:
            versions.append(v)
            v = v.previousVersion
        versions.reverse()
        entries = list(cls.records.entries) if cls.records else []
        contexts = dict(cls.records.contexts) if cls.records else {}
        remote = cls.base.remoteAddressAndPort
        new, callouts = [], []
        for v in versions:
            if v.remoteAddressAndPort == remote and v.localRedirectHandle is None:
                continue
            address = v.remoteAddressAndPort[0]
            if not self._in_layer_family(cls, address):
                self._blame(v, "bad-redirect", f"redirected to {_text(v.remoteAddressAndPort)}, an address of the "
                            f"wrong family for this {'IPv4' if cls.family == C.AF_INET else 'IPv6'} layer "
                            "(docs/facts.md §5.9): redirect ignored")
                continue
            handle = v.localRedirectHandle
            local_target = self.host.owns(unmap(address))
            if handle is None:
                if local_target:
                    self._blame(v, "bad-redirect", "redirected to a local address without a localRedirectHandle "
                                "(required from Windows 8, docs/facts.md §5.2): redirect ignored")
                    continue
                remote = v.remoteAddressAndPort       # a plain rewrite to a remote address
                continue
            if not isinstance(handle, RedirectHandle) or handle.destroyed:
                self._blame(v, "bad-redirect", f"used redirect handle {handle!r}, which is not a live handle: "
                            "redirect ignored")
                continue
            if local_target and not v.localRedirectTargetPID:
                # FWPS_CONNECT_REQUEST0 page: the PID 'must be set for loopback redirect changes to be
                # accepted by the engine' (docs/facts.md §5.2).
                self._blame(v, "target-pid-zero", f"redirected to {_text(v.remoteAddressAndPort)} with "
                            "localRedirectTargetPID 0; the engine accepts a local redirect only with the PID "
                            "of the process that will accept it (docs/facts.md §5.2): redirect ignored")
                continue
            remote = v.remoteAddressAndPort
            callouts.append(self._filter_callout(v.modifierFilterId))
            new.append(RedirectEntry(handle.id, handle.provider, v.modifierFilterId, v.localRedirectTargetPID))
            if v.localRedirectContext is not None:
                context = bytes(v.localRedirectContext)
                if v.localRedirectContextSize != len(context):
                    self._blame(v, "context-size", f"set localRedirectContextSize {v.localRedirectContextSize} "
                                f"for a context of {len(context)} bytes; the proxy gets "
                                f"{min(len(context), v.localRedirectContextSize)} bytes")
                    context = context[:v.localRedirectContextSize]
                contexts[len(entries) + len(new) - 1] = context
        if request.socket.family == C.AF_INET6 and len(remote[0]) == 4:
            remote = (v4_mapped(remote[0]), remote[1])    # the socket's own address form
        if new:
            entries += new
            lineage = self.world.hops.redirected(request, entries[len(entries) - len(new):], remote,
                                                 cls.states_seen, self, callouts[-1], tcp)
            if lineage is None:                   # a loop: the world stops it here
                cls.proceed(C.WSAECONNREFUSED if tcp else C.WSAEACCES)
                return
            flow = FlowRedirect(entries, contexts, self.host.records_key, lineage)
            self.world.hops.register(flow)
            request.meta["redirect"] = flow
            request.meta["redirect_target_pid"] = new[-1].target_pid
            hop = lineage.hops[-1]
            request.meta["note"] = (f"WFP: redirected by {hop.vendor} to {hop.redirected_to} (pid {hop.proxy_pid}); "
                                    f"original {hop.destination}")
            request.remote = remote
        else:
            if remote != cls.base.remoteAddressAndPort:
                request.remote = remote
            self.world.hops.passed(request, cls.states_seen, tcp)
        cls.proceed(0)

    @staticmethod
    def _in_layer_family(cls, address: bytes) -> bool:
        """Is a redirect target of the layer's IP version? (v4-mapped counts as IPv4)"""
        return (len(address) == 4 or is_v4_mapped(address)) == (cls.family == C.AF_INET)

    def _filter_callout(self, filter_id: int) -> str:
        flt = next((f for f in self.filters if f.filterId == filter_id), None)
        return flt.callout_name if flt else "callout"

    def _blame(self, version, kind: str, message: str) -> None:
        self.current_callout = self._filter_callout(version.modifierFilterId)
        self.diagnose(kind, message)
        self.current_callout = ""
