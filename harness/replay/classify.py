"""A replay's divergences, classified: where a trace recorded on the simulator under the wine-8.0
profile (decision points answered as Wine does) is replayed on Wine, each divergence is a known Wine
deviation of harness/conformance/wine-deviations.toml, or unclassified (a simulator bug, a missing
decision point, or a deviation not listed).

A divergence is a deviation by its shape first: the entry's `replay` signatures name the call and
the argument whose bytes differ (or its return value or last error), wherever the trace meets it;
a writes divergence is classified word by word, each word by the argument it belongs to
(harness.replay.params), and split where its words are different deviations. Otherwise, a
divergence in a case the entry lists (`tests`: the case is that deviation, xfail on Wine) is that
deviation. The ports the system chose already compare by order of appearance (harness.replay.ports).
"""
from __future__ import annotations

from dataclasses import replace

from harness.conformance import deviations


def _by_shape(d, listed) -> list:
    """[(part of d, deviation or None)]: d split by the deviations whose signatures cover it."""
    if d.field in ("ret", "error"):
        dev = next((dev for dev in listed for sig in dev.replay
                    if sig.covers_value(d.fn, d.field, d.args, d.session)), None)
        return [(d, dev)]
    if d.field != "writes":
        return [(d, None)]
    groups: dict = {}
    for key in sorted(set(d.recorded) | set(d.replayed)):
        owner = d.params.get(key)
        dev = next((dev for dev in listed for sig in dev.replay if sig.covers_word(owner, d.session)), None)
        groups.setdefault(dev.line if dev else None, (dev, []))[1].append(key)
    if len(groups) == 1:
        return [(d, next(iter(groups.values()))[0])]
    return [(replace(d, recorded={k: d.recorded.get(k, "unchanged") for k in keys},
                     replayed={k: d.replayed.get(k, "unchanged") for k in keys},
                     params={k: d.params[k] for k in keys if k in d.params}), dev)
            for dev, keys in groups.values()]


def classify(result, target: str = "wine") -> list:
    """[(divergence, deviation or None)] for every divergence of a ReplayResult (a writes divergence
    whose words are different deviations is split into one part per deviation)."""
    listed = list(deviations.load_target(target) or []) if target in deviations.FILES else []
    out = []
    for d in result.divergences:
        for part, dev in _by_shape(d, listed):
            if dev is None and part.session:
                dev = next((dev for dev in listed if dev.matches(part.session)), None)
            out.append((part, dev))
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
