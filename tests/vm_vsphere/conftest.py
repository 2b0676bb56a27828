"""Fixtures for tests/vm_vsphere: a real vcsim (tools/vcsim) over verified TLS.
The implementation lives in vsphere_testlib.py so test files can import helpers."""

from vsphere_testlib import lab, make_lab, run_id, vcsim, vcsim_binary, vs  # noqa: F401  (fixtures)
