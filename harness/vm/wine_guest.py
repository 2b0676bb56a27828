"""pytest plugin for a guest whose Winsock is Wine 8.0 (the lab's stand-ins): ``-p harness.vm.wine_guest``.

The suite reaches such a guest as ``--target agent`` (its winsock-agent, over SSH or as
a local child), so the plugin cannot know it is Wine.  This plugin applies Wine's
reviewed deviations from Windows (``harness/conformance/wine-deviations.toml``) the way
``--target wine`` does: each case they cover is xfail(strict=True), so the run passes
exactly where ``--target wine`` passes and a case Wine stops deviating on fails (XPASS).
Used with ``--profile wine-8.0`` (``harness.vm.guest_os.StandInOs.winsock_args``).
"""
from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    from harness.conformance.deviations import load_target
    deviations = load_target("wine")
    for item in items:
        known = deviations.match(item.nodeid)
        if known is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=known.reason))
