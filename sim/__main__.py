"""python -m sim scenario list | run NAME [--json] [--pcap FILE] [--profile NAME]

An alias of `wfp-harness scenario` (sim.worlds.cli).
"""
from __future__ import annotations

import sys

from sim.worlds.cli import main

if __name__ == "__main__":
    sys.exit(main())
