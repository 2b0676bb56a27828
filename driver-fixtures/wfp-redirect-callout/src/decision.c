/*
 * The redirect decision table (include/wfprc_decision.h). Pure: no kernel
 * calls, no globals, so the same file is compiled for the host in the tests.
 */
#include "wfprc_decision.h"

WFPRC_DECISION WfprcDecideBeforeAcquire(int hasWriteRight, int hasLayerData, int policyMatched,
                                        int redirectState)
{
    /* 1. Another callout already decided and took the right: do not fight it
     *    (docs/facts.md §5.5). */
    if (!hasWriteRight) {
        return WfprcDecisionLeave;
    }
    if (!hasLayerData) {
        return WfprcDecisionPermit;
    }
    /* 2. Policy. */
    if (!policyMatched) {
        return WfprcDecisionPermit;
    }
    /* 3. Redirect state for our handle (docs/facts.md §5.4, §5.7): BY_SELF is
     *    our proxy's outbound connection, PREVIOUSLY_BY_SELF a flow we proxied
     *    before another proxy took it (redirecting again is the two-vendor
     *    loop); an unknown state is never redirected. */
    switch (redirectState) {
    case WFPRC_STATE_NOT_REDIRECTED:
    case WFPRC_STATE_REDIRECTED_BY_OTHER:
        return WfprcDecisionAcquire;
    default:
        return WfprcDecisionPermit;
    }
}

WFPRC_DECISION WfprcDecideAfterAcquire(int isReauthorize, int previousModifiedBySelf,
                                       int foreignLocalRedirectInChain)
{
    /* 4. A reauthorization of the version our own filter made (WFPSampler). */
    if (isReauthorize && previousModifiedBySelf) {
        return WfprcDecisionPermit;
    }
    /* 5. Another callout's localRedirectHandle in the previousVersion chain:
     *    a local proxy owns the flow (HOWTO; EBPF walks the whole chain). */
    if (foreignLocalRedirectInChain) {
        return WfprcDecisionPermit;
    }
    /* 6. Redirect. */
    return WfprcDecisionRedirect;
}
