"""Each decision point is one object, read by the simulator where it says, and probed or not with a reason.

- a point with several choices is read in each module its `read_in` names,
  through `DECISIONS["name"]` and its `.choice("x")` (checked when the module loads);
- a single-choice point is implemented where `read_in` says, and that module names it;
- no module of the simulator compares a profile value with a bare string;
- every point has a probe (`probe_<name>` in harness/replay/probes.py) or says why not;
- code or a profile that names a choice that does not exist fails at load.
"""
import ast
import re
from pathlib import Path

import pytest

from harness.replay import probes
from sim.decision_points import API, DECISIONS, REDIRECTED
from sim.profiles import ProfileError, load_file

ROOT = Path(__file__).resolve().parent.parent
SIM = ROOT / "sim"


@pytest.mark.parametrize("name", sorted(DECISIONS))
def test_the_simulator_reads_each_point_where_it_says(name):
    dp = DECISIONS[name]
    assert dp.read_in, f"{name}: read_in names no module"
    for module in dp.read_in:
        text = (ROOT / module).read_text()
        if len(dp.choices) > 1:
            assert f'DECISIONS["{name}"]' in text, f"{module} does not read {name}"
        else:
            assert f"decision point {name}" in text.lower() or f"`{name}`" in text, \
                f"{module} does not name the single-choice point {name} where it implements it"


def test_every_choice_named_in_the_simulator_exists():
    for path in SIM.rglob("*.py"):
        for name, value in re.findall(r'DECISIONS\["(\w+)"\]\.choice\("(\w+)"\)', path.read_text()):
            assert name in DECISIONS, f"{path}: unknown decision point {name}"
            assert value in DECISIONS[name].choices, f"{path}: {name} has no choice {value!r}"


def test_no_bare_string_comparison_with_a_profile_value():
    offenders = []
    for path in SIM.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            reads_point = any(isinstance(s, ast.Attribute) and s.attr in DECISIONS for s in sides)
            has_literal = any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides)
            if reads_point and has_literal:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize("name", sorted(DECISIONS))
def test_every_point_is_probed_or_says_why_not(name):
    dp = DECISIONS[name]
    if dp.probe == API:
        assert probes.API_PROBES[name] is getattr(probes, f"probe_{name}")
    elif dp.probe == REDIRECTED:
        assert probes.REDIRECT_PROBES[name] is getattr(probes, f"probe_{name}")
    else:
        assert len(dp.probe) > 20 and probes.NO_PROBE[name] == dp.probe


def test_a_choice_that_does_not_exist_fails_at_load(tmp_path):
    with pytest.raises(ValueError, match="not one of"):
        DECISIONS["routine_and_port"].choice("sometimes")
    profile = tmp_path / "bad.toml"
    profile.write_text('name = "bad"\ninherit = "documented"\n\n[decisions.routine_and_port]\n'
                       'value = "sometimes"\nprovenance = "assumed"\nsource = "a test"\n')
    with pytest.raises(ProfileError, match="routine_and_port"):
        load_file(profile)
