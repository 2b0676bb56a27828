"""Start winsock-agent sessions: under wine64, or through any command (ssh, a Windows path).

    session = start_wine()                                    # builds the agent if needed
    session = start_command("ssh winhost C:\\\\wfp\\\\winsock-agent.exe")

Wine runs in its own prefix under the agent cache (`<cache>/wineprefix`),
with WINEDEBUG=-all and Mono/Gecko installers disabled. The first start
creates the prefix with `wineboot -i` (10-30 s; guarded by a file lock so
parallel test processes wait for one boot) and uses a longer HELLO timeout.
A wineserver for the prefix is started up front with its standard streams on
/dev/null: if the agent's first wine process started it, the server would
inherit the agent's pipes and keep them open after the agent died, hiding
its death from the reader.
"""
from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from harness.agent import build
from harness.agent.protocol import AgentError, AgentUnavailable
from harness.agent.session import AgentSession

WINE_PACKAGE = "wine64"
FIRST_START_TIMEOUT = 300.0
START_TIMEOUT = 60.0
WINESERVER_LINGER_S = 30


def call_timeout() -> float:
    """Seconds a call may take before the agent counts as hung (env WFP_AGENT_TIMEOUT, default 10;
    waits with a timeout of their own get that time on top)."""
    try:
        return float(os.environ.get("WFP_AGENT_TIMEOUT", "10"))
    except ValueError:
        raise AgentError(f"WFP_AGENT_TIMEOUT={os.environ['WFP_AGENT_TIMEOUT']!r} is not a number") from None


def find_wine() -> Path:
    """Env WFP_WINE, else wine64 on PATH, else where Debian's wine64 package puts it (/usr/lib/wine/wine64)."""
    override = os.environ.get("WFP_WINE")
    candidates = (override,) if override else (shutil.which("wine64"), "/usr/lib/wine/wine64")
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise AgentUnavailable(f"wine64 not found: install the Debian package {WINE_PACKAGE}", WINE_PACKAGE)


def _wineserver(wine: Path) -> Path | None:
    for candidate in (wine.parent / "wineserver", shutil.which("wineserver")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def wine_prefix() -> Path:
    return build.cache_dir() / "wineprefix"


def wine_env(prefix: Path | None = None) -> dict:
    env = dict(os.environ)
    env.update(WINEPREFIX=str(prefix or wine_prefix()), WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=")
    env.pop("DISPLAY", None)                 # a console program; never open windows
    return env


def _run(wine: Path, env: dict, *args: str) -> None:
    proc = subprocess.run([str(wine), *args], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=FIRST_START_TIMEOUT, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise AgentError(f"preparing the Wine prefix {env['WINEPREFIX']}: `wine64 {' '.join(args)}` failed "
                         f"(exit {proc.returncode}):\n{tail}")


def ensure_prefix(wine: Path, env: dict) -> bool:
    """Create the Wine prefix if it is not ready; True if this call prepared it.

    Wine 8's prefixes default to Windows 7; the agent should see the Windows
    the conformance suite is about, so the prefix is set to Windows 10.
    """
    prefix = Path(env["WINEPREFIX"])
    ready = prefix / ".wfp-harness-ready"
    if ready.is_file():
        return False
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(prefix.parent / "wineprefix.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.is_file():
            return False
        if not (prefix / "system.reg").is_file():
            _run(wine, env, "wineboot", "-i")
        _run(wine, env, "reg", "add", "HKCU\\Software\\Wine", "/v", "Version", "/t", "REG_SZ", "/d", "win10", "/f")
        ready.write_text("wineboot done; Windows version win10\n")
        return True


def ensure_wineserver(wine: Path, env: dict) -> None:
    """Start (or keep) a persistent wineserver for the prefix, detached from our pipes."""
    server = _wineserver(wine)
    if server is None:
        return
    # `wineserver -p N` returns at once: if no server runs for the prefix it forks
    # one into the background that lingers N s after the last process exits.
    subprocess.run([str(server), f"-p{WINESERVER_LINGER_S}"], env=env, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                   timeout=60, check=False)


def start_wine(exe: Path | None = None) -> AgentSession:
    """A session with the agent running under wine64 in the harness's own prefix."""
    wine = find_wine()
    exe = exe or build.agent_exe()
    env = wine_env()
    first = ensure_prefix(wine, env)
    ensure_wineserver(wine, env)
    return AgentSession([str(wine), str(exe)], env=env, label=f"wine64 {exe.name}",
                        startup_timeout=FIRST_START_TIMEOUT if first else START_TIMEOUT,
                        call_timeout=call_timeout())


def start_command(command: str) -> AgentSession:
    """A session with the agent started by `command` (split with shlex), e.g. an ssh exec channel."""
    argv = shlex.split(command)
    if not argv:
        raise AgentError("--agent-command is empty")
    if shutil.which(argv[0]) is None and not os.path.exists(argv[0]):
        raise AgentError(f"--agent-command: {argv[0]!r} not found")
    return AgentSession(argv, label=command, startup_timeout=START_TIMEOUT, call_timeout=call_timeout())
