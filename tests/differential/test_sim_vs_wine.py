"""The simulator against Wine's real ws2_32, over generated programs (tests/differential/program.py).

HYPOTHESIS_PROFILE=ci (default) runs a bounded number of programs; deep (nightly) many more.
"""
from hypothesis import settings

from .program import DifferentialMachine

STEPS = 25


def test_simulator_and_wine_agree(wine_available):
    machine = DifferentialMachine.TestCase
    machine.settings = settings(settings.default, stateful_step_count=STEPS)
    machine("runTest").runTest()
