"""The conformance suite: one set of cases, run against the simulator or a real Windows guest.

    pytest --pyargs harness.conformance [--target sim|wine|agent] [--profile NAME]

Each case names the documentation page or the observed behaviour it checks
(docs/windows-observed.md item numbers). Expected values that the
documentation leaves open come from the active profile (`decide`), never
from literals in the case.
"""
