"""Repository-level pytest configuration.

The wfp-harness plugin (harness.pytest_plugin) is registered by its entry
point when the project is installed; this file only sets the hypothesis
profiles: `ci` (the default, fast) and `deep` (nightly), chosen with
HYPOTHESIS_PROFILE.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
