"""Worlds with actors in them: ready-made worlds, services, the sample driver's
callout, and the named scenarios.

This is the one part of `sim` that may import the clients of the contract
(`harness.proxy`, `harness.sample_driver`); the model beside it imports only
`harness.winsock`. The layering is checked by import-linter (pyproject.toml).
"""
