"""Test harness for WFP connection-redirect drivers: contract, conformance suite, VM orchestrator."""
__version__ = "0.1.0"
