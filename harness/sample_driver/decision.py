"""The callout's decision at ALE_CONNECT_REDIRECT, in the order of src/classify.c."""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from harness.winsock import constants as C

if TYPE_CHECKING:
    from harness.sample_driver.policy import RedirectPolicy

# --- the callout's decision (src/classify.c, docs/facts.md §5.4, §5.5, §5.7) ---------
class Decision(enum.Enum):
    LEAVE = "leave"          # no FWPS_RIGHT_ACTION_WRITE: return, touch nothing
    PERMIT = "permit"        # FWP_ACTION_PERMIT, no redirect
    REDIRECT = "redirect"    # rewrite to loopback:proxy, then FWP_ACTION_PERMIT


def may_redirect_in_state(state: int) -> bool:
    """docs/facts.md §5.4: NOT_REDIRECTED / BY_OTHER may redirect; BY_SELF and
    PREVIOUSLY_BY_SELF never (the driver permits), unknown values neither."""
    return state in (C.FWPS_CONNECTION_NOT_REDIRECTED, C.FWPS_CONNECTION_REDIRECTED_BY_OTHER)


def decide(policy: RedirectPolicy, *, protocol: int, remote_port: int, process_id: int,
           redirect_state: int, has_write_right: bool = True, is_reauthorize: bool = False,
           previous_modified_by_self: bool = False,
           foreign_local_redirect_in_chain: bool = False) -> Decision:
    """What the sample callout does with one ALE_CONNECT_REDIRECT classify.

    Same order as WfprcClassify:
    1. without the write right, leave (docs/facts.md §5.5; EBPF bails too);
    2. not matched by the policy: permit;
    3. redirect state BY_SELF / PREVIOUSLY_BY_SELF (or unknown): permit;
    4. reauthorization whose previous version our filter made: permit
       (WFPSampler, docs/facts.md §5.7);
    5. an earlier version in the previousVersion chain carries another
       callout's localRedirectHandle: permit, a local proxy owns it
       (HOWTO, docs/facts.md §5.5; EBPF walks the whole chain);
    6. otherwise redirect.
    """
    if not has_write_right:
        return Decision.LEAVE
    if not policy.matches(protocol, remote_port, process_id):
        return Decision.PERMIT
    if not may_redirect_in_state(redirect_state):
        return Decision.PERMIT
    if is_reauthorize and previous_modified_by_self:
        return Decision.PERMIT
    if foreign_local_redirect_in_chain:
        return Decision.PERMIT
    return Decision.REDIRECT

