"""The simulator (profile wine-8.0) against Wine's real ws2_32, over generated programs
(tests/differential/program.py; how to read a failure and classify it: tests/differential/README.md).

HYPOTHESIS_PROFILE=ci (the default) runs a bounded number of programs, deep (nightly) many more.
"""
from hypothesis import settings

from .program import ArgumentSpaceMachine, DifferentialMachine

STEPS = 25
CI_PROGRAMS = 30        # the fast profile's programs per test (deep: the profile's own count)


def _run(machine_class):
    test = machine_class.TestCase
    base = settings.default
    examples = min(base.max_examples, CI_PROGRAMS) if settings._current_profile != "deep" else base.max_examples
    test.settings = settings(base, stateful_step_count=STEPS, max_examples=examples)
    test("runTest").runTest()


def test_stateful_model_agrees(wine_available):
    """Overlapped receives, sends and IOCTLs with every completion mechanism, waits, dequeues,
    cancels, shutdowns, closes, WSAPoll, TCP and UDP data with flags."""
    _run(DifferentialMachine)


def test_argument_space_agrees(wine_available):
    """The stateful model plus WSAStartup/WSACleanup with any version, socket/WSASocketW with any
    family, type, protocol and flags, get/setsockopt, every IOCTL code the contract names."""
    _run(ArgumentSpaceMachine)
