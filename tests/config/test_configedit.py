"""Editing the config file in place (hems.configedit): comments and order survive, values
are set by path, check-config's messages name the field, writes are atomic with a backup."""

from __future__ import annotations

from pathlib import Path

import pytest

from hems.configedit import (
    DELETE,
    apply_edits,
    dump_document,
    load_document,
    problems_by_field,
    set_path,
    write_atomic,
)

TEXT = """\
# The test home.
site:
  id: home
  name: Test home     # shown in the page's header
  timezone: Europe/London

devices:
  - {type: sunspec, id: pv, role: pv, host: 127.0.0.1, port: 5020, unit_id: 1,
     rated_w: 3680}
  - type: ocpp
    id: wallbox
    password: secret-1234-abcdefgh
    ev: {default_departure: "07:30", target_energy_wh: 15000}

limits:
  fuse_a: 60          # the main fuse
  phases: 1
  export_limit_w: 3680

ocpp:
  enabled: true
"""


def test_round_trip_without_edits_is_the_same_text() -> None:
    checked = apply_edits(TEXT, {})
    assert checked.ok and not checked.changed
    assert checked.new_text == TEXT


def test_a_set_value_keeps_comments_order_and_hand_wrapped_lines() -> None:
    checked = apply_edits(TEXT, {("limits", "fuse_a"): 80, ("site", "name"): "New name"})
    assert checked.ok, checked.problems
    old, new = TEXT.splitlines(), checked.new_text.splitlines()
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    assert changed == [
        ("  name: Test home     # shown in the page's header",
         "  name: New name      # shown in the page's header"),  # the comment column kept
        ("  fuse_a: 60          # the main fuse", "  fuse_a: 80          # the main fuse"),
    ]  # fmt: skip
    assert checked.config is not None and checked.config.limits.fuse_a == 80


def test_set_by_path_into_lists_new_sections_and_deletes() -> None:
    checked = apply_edits(
        TEXT,
        {
            ("devices", 1, "ev", "default_departure"): "08:15",
            ("planner", "tariff", "kind"): "octopus_agile",  # planner: did not exist
            ("limits", "export_limit_w"): DELETE,  # back to the default
            ("limits", "phases"): 1,  # unchanged: the line is not touched
        },
    )
    assert checked.ok, checked.problems
    assert 'ev: {default_departure: "08:15", target_energy_wh: 15000}' in checked.new_text
    assert "planner:\n  tariff:\n    kind: octopus_agile\n" in checked.new_text
    assert "export_limit_w" not in checked.new_text
    cfg = checked.config
    assert cfg is not None and cfg.planner.tariff.kind == "octopus_agile"
    assert cfg.limits.export_limit_w == 3680.0  # the model's default


def test_a_string_the_daemon_would_read_as_a_number_is_quoted() -> None:
    doc = load_document("site: {id: home, name: x}\n")
    set_path(doc, ("site", "name"), "12:30")  # YAML 1.1: sexagesimal 750
    set_path(doc, ("site", "timezone"), "Europe/Paris")
    assert dump_document(doc) == 'site: {id: home, name: "12:30", timezone: Europe/Paris}\n'


def test_a_list_entry_is_never_invented() -> None:
    doc = load_document(TEXT)
    with pytest.raises(KeyError, match=r"devices\[5\]"):
        set_path(doc, ("devices", 5, "ev", "target_energy_wh"), 1.0)


def test_validation_errors_are_check_configs_messages_by_field() -> None:
    checked = apply_edits(
        TEXT,
        {("limits", "fuse_a"): 0, ("devices", 1, "ev", "default_departure"): "25:00"},
        source="hems.yaml",
    )
    assert not checked.ok and checked.config is None
    assert "limits.fuse_a: must be > 0.0 (line 16)" in checked.problems
    by_field = problems_by_field(checked.problems)
    assert by_field["limits.fuse_a"] == ["must be > 0.0"]
    assert by_field["devices[1].ev.default_departure"] == [
        "must be a time HH:MM (24 h), got '25:00'"
    ]


def test_write_is_atomic_and_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "hems.yaml"
    path.write_text(TEXT)
    path.chmod(0o640)
    checked = apply_edits(TEXT, {("limits", "fuse_a"): 80})
    backup = write_atomic(path, checked.new_text)
    assert backup == tmp_path / "hems.yaml.bak"
    assert backup.read_text() == TEXT
    assert path.read_text() == checked.new_text
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hems.yaml", "hems.yaml.bak"]


def test_a_failed_validation_writes_nothing(tmp_path: Path) -> None:
    """apply_edits never writes; the page writes only a checked result. Here: the file and
    folder are as before after a rejected edit."""
    path = tmp_path / "hems.yaml"
    path.write_text(TEXT)
    checked = apply_edits(path.read_text(), {("limits", "fuse_a"): 0}, source=str(path))
    assert not checked.ok
    assert path.read_text() == TEXT
    assert [p.name for p in tmp_path.iterdir()] == ["hems.yaml"]
