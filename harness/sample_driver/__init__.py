"""Contract between the sample WFP redirect callout driver and Python.

The sample driver lives in ``driver-fixtures/wfp-redirect-callout``. This
module is the Python half of what it shares with user mode:

* the **policy**: registry values under the service's ``Parameters`` key
  (format documented in ``driver-fixtures/wfp-redirect-callout/POLICY.md``);
  :class:`RedirectPolicy` parses them from a dict of registry values or from
  ``.reg`` text, validates them exactly as the driver does, and renders them
  back;
* the **redirect context** the driver attaches to each redirected connection
  (``WFPRC_REDIRECT_CONTEXT`` in ``include/wfp_redirect_callout.h``):
  :func:`pack_context` / :func:`unpack_context`;
* the **decision** the callout takes at ALE_CONNECT_REDIRECT
  (:func:`decide`), in the same order as ``src/classify.c``, so the
  simulator's model of the callout and the C code cannot drift apart
  silently.

Pure standard library; imports only the contract modules
(docs/decisions.md §2). tests/driver_fixtures compiles static asserts generated
from the constants and layouts below against the C header.
"""
from harness.sample_driver.common import *  # noqa: F401,F403
from harness.sample_driver.common import CTL_CODE  # noqa: F401
from harness.sample_driver.regfile import parse_reg, render_reg  # noqa: F401
from harness.sample_driver.policy import RedirectPolicy, parse_registry_values  # noqa: F401
from harness.sample_driver.context import (  # noqa: F401
    CONTEXT_MAGIC, CONTEXT_SIZE, CONTEXT_VERSION, REDIRECT_CONTEXT, Endpoint, RedirectContext,
    endpoint_of, pack_context, pack_context_raw, storage_of, unpack_context)
from harness.sample_driver.decision import Decision, decide, may_redirect_in_state  # noqa: F401
