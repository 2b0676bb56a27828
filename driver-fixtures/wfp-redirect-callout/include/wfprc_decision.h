/*
 * The sample callout's redirect decision as a pure table, in two stages
 * (classify.c calls them; harness/sample_driver/decision.py is the same table
 * in Python, and tests/driver_fixtures/test_decision_table.py compiles this
 * file for the host and compares the two on every input).
 *
 * Plain C types only, so the table builds with any C compiler.
 */
#ifndef WFPRC_DECISION_H
#define WFPRC_DECISION_H

/* FWPS_CONNECTION_REDIRECT_STATE values (fwpsk.h); classify.c asserts they match. */
#define WFPRC_STATE_NOT_REDIRECTED              0
#define WFPRC_STATE_REDIRECTED_BY_SELF          1
#define WFPRC_STATE_REDIRECTED_BY_OTHER         2
#define WFPRC_STATE_PREVIOUSLY_REDIRECTED_BY_SELF 3

typedef enum _WFPRC_DECISION {
    WfprcDecisionLeave = 0,      /* no FWPS_RIGHT_ACTION_WRITE: return, touch nothing */
    WfprcDecisionPermit = 1,     /* FWP_ACTION_PERMIT, no redirect */
    WfprcDecisionAcquire = 2,    /* go on: acquire the writable layer data, then ask WfprcDecideAfterAcquire */
    WfprcDecisionRedirect = 3    /* rewrite to loopback:proxy, then FWP_ACTION_PERMIT */
} WFPRC_DECISION;

/* Steps 1-3, before anything is acquired. policyMatched and redirectState
 * are read only when the earlier steps go on (classify.c queries the state
 * only for a matched flow). */
WFPRC_DECISION WfprcDecideBeforeAcquire(int hasWriteRight, int hasLayerData, int policyMatched,
                                        int redirectState);

/* Steps 4-5, on the writable copy: WfprcDecisionPermit (apply unchanged) or WfprcDecisionRedirect. */
WFPRC_DECISION WfprcDecideAfterAcquire(int isReauthorize, int previousModifiedBySelf,
                                       int foreignLocalRedirectInChain);

#endif
