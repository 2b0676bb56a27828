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
Every acquire is matched by one apply, even when nothing changed. Like
classify.c it reads the PID only when FWPS_METADATA_FIELD_PROCESS_ID is set,
the records handle only when FWPS_METADATA_FIELD_REDIRECT_RECORD_HANDLE is,
and copies the connect request's addresses as they are (their family is the
SOCKADDR_STORAGE's: WfprcSetLoopback keeps it). It is written only against
the public callout API (sim.wfp.api), as a driver team's model would be.
"""
from __future__ import annotations

from harness.sample_driver import RedirectPolicy, pack_context_raw
from harness.sample_driver.decision import LEAVE, PERMIT, after_acquire, before_acquire
from sim.wfp import api

STATUS_SUCCESS = api.STATUS_SUCCESS


class SampleCallout:
    def __init__(self, driver: api.Driver, policy: RedirectPolicy):
        self.name = driver.vendor
        self.fwps = driver.fwps
        self.redirect_handle = driver.redirect_handle      # g_Wfprc.redirectHandle
        self.policy = policy
        self.generation = 1
        self.redirected = 0

    def reload(self, policy: RedirectPolicy) -> None:
        """IOCTL_WFPRC_RELOAD_POLICY: a new policy generation."""
        self.policy = policy
        self.generation += 1

    @staticmethod
    def _permit(out, flt) -> None:
        out.actionType = api.FWP_ACTION_PERMIT

    def classify(self, fixed, meta, layer_data, classify_context, flt, flow_context, out) -> None:
        fwps = self.fwps
        # 1-3: the table's first stage, with what classify.c reads (the state only for a matched flow).
        has_write_right = bool(out.rights & api.FWPS_RIGHT_ACTION_WRITE)
        has_layer_data = layer_data is not None and classify_context is not None
        matched = False
        state = api.FWPS_CONNECTION_NOT_REDIRECTED
        process_id = 0
        if has_write_right and has_layer_data:
            if api.is_metadata_field_present(meta, api.FWPS_METADATA_FIELD_PROCESS_ID):
                process_id = meta.processId
            matched = self.policy.matches(fixed.ip_protocol, fixed.ip_remote_port, process_id)
            # Without a records handle nobody has redirected this flow yet.
            if matched and api.is_metadata_field_present(meta, api.FWPS_METADATA_FIELD_REDIRECT_RECORD_HANDLE) \
                    and meta.redirectRecords is not None:
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
        reauthorize = fixed.flags & api.FWP_CONDITION_FLAG_IS_REAUTHORIZE
        modified_by_self = previous is not None and previous.modifierFilterId == flt.filterId
        second = after_acquire(reauthorize, modified_by_self, self._foreign_local_redirect(previous))
        if second is PERMIT:
            fwps.FwpsApplyModifiedLayerData0(handle, writable, 0)    # 4, 5: unchanged
            fwps.FwpsReleaseClassifyHandle0(handle)
            out.actionType = api.FWP_ACTION_PERMIT
            out.rights |= api.FWPS_RIGHT_ACTION_WRITE
            return
        # 6. classify.c copies the request's remote and local SOCKADDR_STORAGEs into the context.
        (remote_ip, remote_port), (local_ip, local_port) = writable.remoteAddressAndPort, writable.localAddressAndPort
        context = pack_context_raw(remote_ip, remote_port, local_ip, local_port, protocol=fixed.ip_protocol,
                                   process_id=process_id, policy_generation=self.generation)
        writable.remoteAddressAndPort = api.loopback_like(writable.remoteAddressAndPort,
                                                          self.policy.proxy_port_for(fixed.ip_protocol))
        writable.localRedirectTargetPID = self.policy.proxy_process_id
        writable.localRedirectHandle = self.redirect_handle
        writable.localRedirectContext = context
        writable.localRedirectContextSize = len(context)
        fwps.FwpsApplyModifiedLayerData0(handle, writable, 0)
        fwps.FwpsReleaseClassifyHandle0(handle)
        out.actionType = api.FWP_ACTION_PERMIT
        self.redirected += 1

    def _foreign_local_redirect(self, version) -> bool:
        while version is not None:
            if version.localRedirectHandle is not None and version.localRedirectHandle is not self.redirect_handle:
                return True
            version = version.previousVersion
        return False


def install_sample_driver(world, host, policy: RedirectPolicy, *, vendor: str = "Contoso",
                          provider_key=None, sublayer_weight: int = 0x7F00, filter_weight: int = 10):
    """Load one vendor's copy of the sample driver on `host` (sim.wfp.api.install_callout); returns its callout."""
    driver = api.install_callout(world, host, lambda d: SampleCallout(d, policy), vendor=vendor,
                                 provider_key=provider_key, sublayer_weight=sublayer_weight,
                                 filter_weight=filter_weight)
    return driver.callout
