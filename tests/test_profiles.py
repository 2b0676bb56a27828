"""Profiles as data: every decision answered with a source; malformed files named precisely."""
import pytest

from sim.decision_points import DECISIONS, PROVENANCES
from sim.profiles import BUILTIN, ProfileError, load, load_file


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_profiles_answer_every_decision_with_a_source(name):
    profile = load(name)
    assert set(profile.assignments) == set(DECISIONS)
    for key, a in profile.assignments.items():
        assert a.value in DECISIONS[key].choices
        assert a.provenance in PROVENANCES and a.source.strip()


def test_observed_profile_differs_where_windows_was_seen_to():
    doc, obs = load("documented"), load("windows-observed")
    assert obs.unknown_ioctl_overlapped == "pending" and doc.unknown_ioctl_overlapped == "immediate"
    assert obs.sio_flush == "unsupported" and doc.sio_flush == "cancel_pending"
    assert obs.assignments["sio_flush"].provenance == "observed"


@pytest.mark.parametrize("text,line,field", [
    ('name = "p"\ninherit = "documented"\n[decisions.nope]\nvalue = "x"\nprovenance = "assumed"\nsource = "s"\n',
     3, "decisions.nope"),
    ('name = "p"\ninherit = "documented"\n[decisions.sio_flush]\nvalue = "maybe"\nprovenance = "assumed"\n'
     'source = "s"\n', 4, "decisions.sio_flush.value"),      # the value line itself
    ('name = "p"\ninherit = "documented"\n[decisions.sio_flush]\nvalue = "unsupported"\nprovenance = "guess"\n'
     'source = "s"\n', 5, "decisions.sio_flush.provenance"),
    ('name = "p"\ninherit = "documented"\n[decisions.sio_flush]\nvalue = "unsupported"\nprovenance = "assumed"\n',
     3, "decisions.sio_flush.source"),
    ('name = "p"\n[decisions.sio_flush]\nvalue = "unsupported"\nprovenance = "assumed"\nsource = "s"\n',
     0, "decisions."),
    ('name = "p"\ninherit = "documented"\n[decisions.sio_flush\n', 3, "syntax"),
    ('inherit = "documented"\n', 0, "name"),
    ('name = "p"\ncolour = "blue"\n', 2, "colour"),
])
def test_malformed_profile_errors_name_file_line_and_field(tmp_path, text, line, field):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_file(path)
    assert info.value.path == str(path)
    assert info.value.line == line
    assert info.value.field.startswith(field)


def test_unknown_profile_name():
    with pytest.raises(ProfileError, match="built-in profiles are documented, windows-observed"):
        load("no-such-profile")
