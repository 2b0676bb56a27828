"""A replay's divergences, classified: where a trace recorded on the simulator under the wine-8.0
profile (decision points answered as Wine does) is replayed on Wine, a divergence in a session whose
conformance case harness/conformance/wine-deviations.toml lists is that known Wine deviation;
any other is unclassified (a simulator bug, a missing decision point, or a deviation not listed).
The ports the system chose already compare by order of appearance (harness.replay.ports)."""
from __future__ import annotations

from harness.conformance import deviations


def classify(result, target: str = "wine") -> list:
    """[(divergence, deviation or None)] for every divergence of a ReplayResult."""
    listed = deviations.load_target(target) if target in deviations.FILES else []
    out = []
    for d in result.divergences:
        out.append((d, next((dev for dev in listed if d.session and dev.matches(d.session)), None)))
    return out


def format_classified(pairs: list, limit: int = 50) -> str:
    """Unclassified divergences first (each line), then the classified ones counted per deviation."""
    unclassified = [d for d, dev in pairs if dev is None]
    classified: dict = {}
    for d, dev in pairs:
        if dev is not None:
            classified.setdefault(dev.differs, set()).add(d.session)
    lines = [f"classified: {len(pairs) - len(unclassified)} (known Wine deviations), unclassified: {len(unclassified)}"]
    lines += [f"  unclassified: {d.session}: {d.describe()}" for d in unclassified[:limit]]
    if len(unclassified) > limit:
        lines.append(f"  ... {len(unclassified) - limit} more unclassified")
    lines += [f"  known: {differs} ({len(sessions)} case(s))" for differs, sessions in classified.items()]
    return "\n".join(lines)
