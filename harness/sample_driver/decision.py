"""The callout's decision at ALE_CONNECT_REDIRECT: the table of src/decision.c, in Python.

Two stages, as the driver takes them (include/wfprc_decision.h):

1. `before_acquire`: the write right (docs/facts.md §5.5), the layer data, the
   policy, the redirect state for the callout's own handle (§5.4, §5.7);
   answers LEAVE, PERMIT or ACQUIRE;
2. `after_acquire`, on the writable copy: a reauthorization of the callout's
   own version (WFPSampler) or another callout's localRedirectHandle in the
   previousVersion chain (HOWTO; EBPF) permits; otherwise REDIRECT.

The simulated callout (sim.worlds.sample_callout) calls these two functions;
tests/driver_fixtures/test_decision_table.py compiles src/decision.c for the
host and compares both tables on every input.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from harness.winsock import constants as C

if TYPE_CHECKING:
    from harness.sample_driver.policy import RedirectPolicy


class Decision(enum.Enum):
    LEAVE = 0           # no FWPS_RIGHT_ACTION_WRITE: return, touch nothing
    PERMIT = 1          # FWP_ACTION_PERMIT, no redirect
    ACQUIRE = 2         # go on: acquire the writable layer data, then after_acquire
    REDIRECT = 3        # rewrite to loopback:proxy, then FWP_ACTION_PERMIT


def may_redirect_in_state(state: int) -> bool:
    """docs/facts.md §5.4: NOT_REDIRECTED / BY_OTHER may redirect; BY_SELF and
    PREVIOUSLY_BY_SELF never (the driver permits), unknown values neither."""
    return state in _MAY_REDIRECT


# The members as plain names: the simulated callout asks this table on every classify.
LEAVE, PERMIT, ACQUIRE, REDIRECT = Decision.LEAVE, Decision.PERMIT, Decision.ACQUIRE, Decision.REDIRECT
_MAY_REDIRECT = frozenset((C.FWPS_CONNECTION_NOT_REDIRECTED, C.FWPS_CONNECTION_REDIRECTED_BY_OTHER))


def before_acquire(has_write_right: bool, has_layer_data: bool, policy_matched: bool,
                   redirect_state: int) -> Decision:
    """Steps 1-3 (WfprcDecideBeforeAcquire). `redirect_state` is read only for a matched flow."""
    if not has_write_right:
        return LEAVE
    if not has_layer_data or not policy_matched:
        return PERMIT
    return ACQUIRE if redirect_state in _MAY_REDIRECT else PERMIT


def after_acquire(is_reauthorize: bool, previous_modified_by_self: bool,
                  foreign_local_redirect_in_chain: bool) -> Decision:
    """Steps 4-5 (WfprcDecideAfterAcquire): PERMIT (apply the data unchanged) or REDIRECT."""
    if is_reauthorize and previous_modified_by_self:
        return PERMIT
    if foreign_local_redirect_in_chain:
        return PERMIT
    return REDIRECT


def decide(policy: RedirectPolicy, *, protocol: int, remote_port: int, process_id: int,
           redirect_state: int, has_write_right: bool = True, is_reauthorize: bool = False,
           previous_modified_by_self: bool = False,
           foreign_local_redirect_in_chain: bool = False) -> Decision:
    """What the sample callout does with one classify, both stages at once: LEAVE, PERMIT or REDIRECT."""
    first = before_acquire(has_write_right=has_write_right, has_layer_data=True,
                           policy_matched=policy.matches(protocol, remote_port, process_id),
                           redirect_state=redirect_state)
    if first is not Decision.ACQUIRE:
        return first
    return after_acquire(is_reauthorize=is_reauthorize, previous_modified_by_self=previous_modified_by_self,
                         foreign_local_redirect_in_chain=foreign_local_redirect_in_chain)
