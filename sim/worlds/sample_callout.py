"""The sample driver's callout, in Python, and how to install one vendor's driver on a host.

`SampleCallout.classify` follows driver-fixtures/wfp-redirect-callout/src/
classify.c step by step, and takes its decisions from the same table
(harness.sample_driver.decision, which tests compare with src/decision.c):
1. no FWPS_RIGHT_ACTION_WRITE: return untouched;
2. the policy does not match: PERMIT;
3. redirect state (FwpsQueryConnectionRedirectState0): BY_SELF or
   PREVIOUSLY_BY_SELF: PERMIT, never redirect again;
4. acquire the writable data; a reauthorization of our own version: PERMIT;
5. another callout's localRedirectHandle in the previousVersion chain: PERMIT;
6. redirect to loopback:proxy port for the proxy PID, with a context that
   carries the original destination.
Every acquire is matched by one apply, even when nothing changed.
"""
from __future__ import annotations

import uuid

from harness.winsock import constants as C
from harness.sample_driver import RedirectPolicy, pack_context_raw
from harness.sample_driver.decision import LEAVE, PERMIT, after_acquire, before_acquire
from sim.net import LOOP4, LOOP6, unmap

STATUS_SUCCESS = 0


class SampleCallout:
    def __init__(self, name: str, fwps, provider_key: uuid.UUID, policy: RedirectPolicy):
        self.name = name
        self.fwps = fwps
        self.policy = policy
        self.generation = 1
        status, self.redirect_handle = fwps.FwpsRedirectHandleCreate0(provider_key, 0)
        if status != STATUS_SUCCESS:
            raise RuntimeError(f"{name}: FwpsRedirectHandleCreate0 failed 0x{status:08X}")
        self.redirected = 0

    def reload(self, policy: RedirectPolicy) -> None:
        """IOCTL_WFPRC_RELOAD_POLICY: a new policy generation."""
        self.policy = policy
        self.generation += 1

    @staticmethod
    def _permit(out, flt) -> None:
        out.actionType = C.FWP_ACTION_PERMIT

    def classify(self, fixed, meta, layer_data, classify_context, flt, flow_context, out) -> None:
        fwps = self.fwps
        # 1-3: the table's first stage, with what classify.c reads (the state only for a matched flow).
        has_write_right = bool(out.rights & C.FWPS_RIGHT_ACTION_WRITE)
        has_layer_data = layer_data is not None and classify_context is not None
        matched = has_write_right and has_layer_data and \
            self.policy.matches(fixed.ip_protocol, fixed.ip_remote_port, meta.processId)
        state = C.FWPS_CONNECTION_NOT_REDIRECTED
        if matched and meta.redirectRecords is not None:
            state, _ = fwps.FwpsQueryConnectionRedirectState0(meta.redirectRecords, self.redirect_handle)
        first = before_acquire(has_write_right, has_layer_data, matched, state)
        if first is LEAVE:
            return
        if first is PERMIT:
            self._permit(out, flt)
            return
        status, handle = fwps.FwpsAcquireClassifyHandle0(classify_context, 0)
        if status != STATUS_SUCCESS:
            self._permit(out, flt)
            return
        status, writable = fwps.FwpsAcquireWritableLayerDataPointer0(handle, flt.filterId, 0, out)
        if status != STATUS_SUCCESS:
            fwps.FwpsReleaseClassifyHandle0(handle)
            self._permit(out, flt)
            return
        previous = writable.previousVersion
        reauthorize = fixed.flags & C.FWP_CONDITION_FLAG_IS_REAUTHORIZE
        modified_by_self = previous is not None and previous.modifierFilterId == flt.filterId
        second = after_acquire(reauthorize, modified_by_self, self._foreign_local_redirect(previous))
        if second is PERMIT:
            fwps.FwpsApplyModifiedLayerData0(handle, writable, 0)    # 4, 5: unchanged
            fwps.FwpsReleaseClassifyHandle0(handle)
            out.actionType = C.FWP_ACTION_PERMIT
            out.rights |= C.FWPS_RIGHT_ACTION_WRITE
            return
        # classify.c copies the request's remote and local SOCKADDR_STORAGEs into the context.
        (remote_ip, remote_port), (local_ip, local_port) = writable.remoteAddressAndPort, writable.localAddressAndPort
        remote_ip, local_ip = unmap(remote_ip), unmap(local_ip)
        v4 = fixed.layerId == C.FWPS_LAYER_ALE_CONNECT_REDIRECT_V4
        if v4 != (len(local_ip) == 4):
            local_ip = bytes(4 if v4 else 16)        # not bound in the layer's family: the unspecified address
        context = pack_context_raw(remote_ip, remote_port, local_ip, local_port, protocol=fixed.ip_protocol,
                                   process_id=meta.processId, policy_generation=self.generation)
        writable.remoteAddressAndPort = (LOOP4 if v4 else LOOP6, self.policy.proxy_port_for(fixed.ip_protocol))
        writable.localRedirectTargetPID = self.policy.proxy_process_id
        writable.localRedirectHandle = self.redirect_handle
        writable.localRedirectContext = context
        writable.localRedirectContextSize = len(context)
        fwps.FwpsApplyModifiedLayerData0(handle, writable, 0)       # 6
        fwps.FwpsReleaseClassifyHandle0(handle)
        out.actionType = C.FWP_ACTION_PERMIT
        self.redirected += 1

    def _foreign_local_redirect(self, version) -> bool:
        while version is not None:
            if version.localRedirectHandle is not None and version.localRedirectHandle is not self.redirect_handle:
                return True
            version = version.previousVersion
        return False


def install_sample_driver(world, host, policy: RedirectPolicy, *, vendor: str = "Contoso",
                          provider_key=None, sublayer_weight: int = 0x7F00, filter_weight: int = 10):
    """Load one vendor's copy of the sample driver on `host`: provider, sublayer, callout, V4/V6 filters."""
    engine = world.wfp(host)
    key = uuid.UUID(str(provider_key)) if provider_key else uuid.uuid5(uuid.NAMESPACE_DNS, f"{vendor}.wfp.example")
    provider = engine.add_provider(key, vendor)
    sublayer = engine.add_sublayer(uuid.uuid5(key, "sublayer"), f"{vendor} redirect", sublayer_weight, provider)
    engine.current_callout = vendor
    callout = SampleCallout(vendor, engine.fwps, provider.key, policy)
    engine.current_callout = ""
    for layer in (C.FWPS_LAYER_ALE_CONNECT_REDIRECT_V4, C.FWPS_LAYER_ALE_CONNECT_REDIRECT_V6):
        engine.add_filter(f"{vendor} redirect", layer, sublayer, filter_weight, callout,
                          protocols=(C.IPPROTO_TCP, C.IPPROTO_UDP))
    return callout
