"""The `agent` target (any command) and the one-line, exit-code-2 answers for a missing tool."""
import os
import shlex
import subprocess
import sys

from harness.agent import build, launch
from harness.agent.pool import capabilities, make_agent_api
from harness.winsock import constants as C

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_agent_target_through_a_command(wine_available):
    wine, exe = launch.find_wine(), build.agent_exe()
    env = launch.wine_env()
    launch.ensure_prefix(wine, env)
    launch.ensure_wineserver(wine, env)
    # What an SSH exec channel would be: a command line, split with shlex.
    command = " ".join(shlex.quote(a) for a in ("env", f"WINEPREFIX={env['WINEPREFIX']}", "WINEDEBUG=-all",
                                                str(wine), str(exe)))
    api = make_agent_api("agent", {"agent_command": command})
    try:
        assert api.session.label == command and api.target == "agent"
        assert api.hello.build_id == exe.stem.removeprefix("winsock-agent-")
        s = api.socket(C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_UDP)
        assert s != C.INVALID_SOCKET and api.closesocket(s) == 0
    finally:
        api.close()
    assert capabilities("agent", {"agent_command": command}) == {"udp", "ipv6", "elevated"}


def _cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "harness.cli", "conformance", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT, **env}, capture_output=True, text=True, timeout=120)


def test_missing_wine_is_one_line_and_exit_2():
    result = _cli("--target", "wine", WFP_WINE="/nonexistent/wine64")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "wfp-harness: --target wine: wine64 not found: install the Debian package wine64\n"


def test_missing_compiler_is_one_line_and_exit_2(wine_available):
    result = _cli("--target", "wine", PATH="/nonexistent", WFP_AGENT_EXE="")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("wfp-harness: --target wine: x86_64-w64-mingw32-gcc not found: install the Debian "
                             "package gcc-mingw-w64-x86-64\n")


def test_retired_native_target_is_one_line_naming_the_agent():
    result = _cli("--target", "native")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("wfp-harness: --target native: retired; on Windows use --target agent --agent-command "
                             "PATH\\TO\\winsock-agent.exe (the same real ws2_32, tested under Wine with --target wine)\n")


def test_agent_target_without_a_command_is_exit_2():
    result = _cli("--target", "agent", WFP_AGENT_COMMAND="")
    assert result.returncode == 2
    assert result.stderr.startswith("wfp-harness: --target agent: needs --agent-command")


def test_pytest_refuses_a_missing_wine_with_exit_2():
    result = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "harness.conformance", "--target", "wine",
                             "-q", "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": ROOT, "WFP_WINE": "/nonexistent/wine64"})
    assert result.returncode == 2
    assert "wfp-harness: --target wine: wine64 not found: install the Debian package wine64" in result.stdout + \
        result.stderr
