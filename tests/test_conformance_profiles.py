"""The conformance suite passes against the simulator under every built-in profile.

`./run tests` collects harness/conformance with the default profile; this
runs it once more per other built-in profile, in a subprocess (the profile
is a session-wide option).
"""
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from sim.profiles import BUILTIN


@pytest.mark.parametrize("profile", [p for p in BUILTIN if p != "documented"])
def test_conformance_suite_passes_under_profile(profile, tmp_path):
    junit = tmp_path / "junit.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "harness.conformance", "-q",
                           "-p", "no:cacheprovider", "--target", "sim", "--profile", profile,
                           f"--junitxml={junit}"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    suite = ET.parse(junit).getroot().find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["wfp.profile"] == profile and props["wfp.target"] == "sim"
    assert int(suite.get("tests")) > 100 and int(suite.get("failures")) == 0


def test_unknown_profile_is_a_one_line_usage_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[decisions.unknown_ioctl_error]\nvalue = "WSAEBOGUS"\nprovenance = "assumed"\n'
                   'source = "test"\n')
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "conformance", "--profile", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    # line 3: the `value` line itself, inside the [decisions.unknown_ioctl_error] table
    assert f"{bad}:3: decisions.unknown_ioctl_error.value" in proc.stderr


@pytest.mark.parametrize("args,env,needle", [
    (["--target", "bogus"], {}, "unknown target 'bogus'"),
    ([], {"WFP_TARGET": "nope"}, "unknown target 'nope'"),
    (["--profile", "no-such"], {}, "unknown profile"),
])
def test_pytest_bad_target_or_profile_exits_2_with_one_line(args, env, needle):
    import os
    proc = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "harness.conformance", "-q",
                           "-p", "no:cacheprovider", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})
    assert proc.returncode == 2
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if needle in line]
    assert len(lines) == 1
