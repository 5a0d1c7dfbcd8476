"""Editing the site config file in place: set values by path, validate, write atomically.

The installer's page changes a handful of values in a file the installer also edits by hand,
so the file's comments, key order and layout must survive. The document is loaded with
ruamel.yaml's round-trip loader, the values are set on it, and the new text is spliced into
the old one line by line where ruamel would re-flow untouched lines (a hand-wrapped flow
mapping); the spliced text is checked to hold exactly the edited data, else ruamel's own
output is used. The result is validated with `hems.config.validate`, the same check as
`hems check-config`, before anything is written.

Paths are `hems.yamllines.Loc` tuples, `("devices", 2, "ev", "target_energy_wh")`, whose
`format_loc` spelling (`devices[2].ev.target_energy_wh`) is how validation errors name them.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, ScalarString

from hems.config import Config, ConfigErrors, validate
from hems.yamllines import Loc, format_loc, load_with_lines

# A value the page may write: YAML scalars only (sections are never replaced wholesale).
Scalar = str | int | float | bool | None


class _Delete:
    """Marks a key to remove, so the model's default applies."""


DELETE = _Delete()
Edit = Scalar | _Delete


@dataclass(frozen=True, slots=True)
class Checked:
    """The outcome of applying edits: the new text and, when valid, its Config."""

    old_text: str
    new_text: str
    config: Config | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.config is not None

    @property
    def changed(self) -> bool:
        return self.new_text != self.old_text


def text_digest(text: str) -> str:
    """The SHA-256 of a config file's text: what a reviewer saw, so that a write made after a
    hand edit can be refused instead of overwriting it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096  # never wrap a line the user wrote on one line
    return y


def load_document(text: str) -> CommentedMap:
    """The round-trip document of a config file's text (a mapping, else ConfigErrors)."""
    try:
        doc = _yaml().load(text)
    except YAMLError as exc:
        raise ConfigErrors([f"config: not valid YAML: {exc}"]) from None
    if not isinstance(doc, CommentedMap):
        raise ConfigErrors(["config: must be a mapping of sections (site, devices, …)"])
    return doc


def dump_document(doc: CommentedMap) -> str:
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue()


def get_path(doc: object, loc: Loc) -> object:
    """The value at `loc`, or DELETE when a key (or index) on the way is absent."""
    node = doc
    for part in loc:
        if isinstance(part, int):
            if not isinstance(node, list) or not 0 <= part < len(node):
                return DELETE
        elif not isinstance(node, Mapping) or part not in node:
            return DELETE
        node = node[part]  # type: ignore[index]
    return node


def set_path(doc: CommentedMap, loc: Loc, value: Edit) -> None:
    """Set (or with DELETE remove) the scalar at `loc`, creating missing mappings on the way.

    A list index must exist: the page edits entries, it does not invent them.
    """
    if not loc:
        raise ValueError("set_path: empty path")
    node: CommentedMap | CommentedSeq = doc
    for depth, part in enumerate(loc[:-1]):
        nxt = node[part] if _has(node, part) else None
        if nxt is None:
            if isinstance(value, _Delete):
                return
            if isinstance(part, int):
                raise KeyError(f"{format_loc(loc[: depth + 1])}: no such entry")
            nxt = CommentedMap()
            node[part] = nxt  # type: ignore[index]
        if not isinstance(nxt, (CommentedMap, CommentedSeq)):
            raise KeyError(f"{format_loc(loc[: depth + 1])}: not a section")
        node = nxt
    last = loc[-1]
    if isinstance(value, _Delete):
        if isinstance(node, CommentedMap) and last in node:
            del node[last]
        return
    if isinstance(value, str):
        value = _as_string(value, node[last] if _has(node, last) else None)
    node[last] = value  # type: ignore[index]


def _as_string(value: str, old: object) -> str:
    """Keep the old value's quote style; quote a string that the daemon's YAML 1.1 loader
    would read as something else (`07:30` is a number there, `on` a boolean)."""
    if isinstance(old, ScalarString):
        return type(old)(value)
    try:
        plain = yaml.safe_load(value)
    except yaml.YAMLError:
        plain = None
    return value if plain == value else DoubleQuotedScalarString(value)


def _has(node: CommentedMap | CommentedSeq, part: str | int) -> bool:
    if isinstance(node, CommentedSeq):
        return isinstance(part, int) and 0 <= part < len(node)
    return part in node


def apply_edits(text: str, edits: Mapping[Loc, Edit], source: str = "config") -> Checked:
    """Apply `edits` to the file's text and validate the result (nothing is written).

    An edit that equals the current value is skipped, so an untouched field never
    re-formats its line (`60` stays `60`, not `60.0`).
    """
    doc = load_document(text)
    base = dump_document(doc)
    changed = False
    for loc, value in edits.items():
        current = get_path(doc, loc)
        if _same(current, value):
            continue
        set_path(doc, loc, value)
        changed = True
    new_text = splice(text, base, dump_document(doc)) if changed else text
    return _checked(text, new_text, source)


def _checked(text: str, new_text: str, source: str) -> Checked:
    data, lines = load_with_lines(new_text)
    try:
        config = validate(data, lines, source)
    except ConfigErrors as exc:
        return Checked(text, new_text, None, tuple(exc.problems))
    return Checked(text, new_text, config, ())


def _same(current: object, value: Edit) -> bool:
    if isinstance(value, _Delete) or isinstance(current, _Delete):
        return isinstance(value, _Delete) and isinstance(current, _Delete)
    if isinstance(current, bool) or isinstance(value, bool):
        return current is value
    if isinstance(current, (int, float)) and isinstance(value, (int, float)):
        return float(current) == float(value)
    return current == value


def splice(original: str, base: str, edited: str) -> str:
    """`original` with the changes from `base` to `edited` (both ruamel dumps) applied.

    `base` is ruamel's rendering of `original`; where they differ (lines ruamel re-flows) a
    change cannot be placed, and the whole `edited` text is returned instead. The result is
    checked to parse to the same data as `edited`.
    """
    a, b, c = original.splitlines(True), base.splitlines(True), edited.splitlines(True)
    to_a: dict[int, int] = {}
    for tag, i1, i2, j1, _ in difflib.SequenceMatcher(None, b, a, autojunk=False).get_opcodes():
        if tag == "equal":
            to_a.update({i: j1 + (i - i1) for i in range(i1, i2)})
    out = list(a)
    hunks = [
        op
        for op in difflib.SequenceMatcher(None, b, c, autojunk=False).get_opcodes()
        if op[0] != "equal"
    ]
    for _, i1, i2, j1, j2 in reversed(hunks):  # from the end, so earlier indexes stay valid
        if i1 < i2:
            if any(i not in to_a for i in range(i1, i2)):
                return edited
            start, end = to_a[i1], to_a[i2 - 1] + 1
            if end - start != i2 - i1:
                return edited
        elif i1 < len(b) and i1 in to_a:
            start = end = to_a[i1]
        elif i1 > 0 and i1 - 1 in to_a:
            start = end = to_a[i1 - 1] + 1
        elif not b:
            start = end = len(a)
        else:
            return edited
        out[start:end] = c[j1:j2]
    spliced = "".join(out)
    try:
        same = yaml.safe_load(spliced) == yaml.safe_load(edited)
    except yaml.YAMLError:
        same = False
    return spliced if same else edited


def unified_diff(old_text: str, new_text: str, name: str) -> str:
    return "".join(
        difflib.unified_diff(
            old_text.splitlines(True), new_text.splitlines(True), f"{name} (now)", f"{name} (new)"
        )
    )


# -- mapping check-config messages to fields ---------------------------------------------------

_PROBLEM = re.compile(r"^(?P<loc>[^:\s]+): (?P<message>.*?)(?: \(line \d+\))?$")


def problems_by_field(problems: tuple[str, ...] | list[str]) -> dict[str, list[str]]:
    """Each problem's message under its location (`devices[2].port`), line suffix dropped;
    a problem with no location sits under ""."""
    out: dict[str, list[str]] = {}
    for problem in problems:
        m = _PROBLEM.match(problem)
        where, message = (m.group("loc"), m.group("message")) if m else ("", problem)
        out.setdefault(where, []).append(message)
    return out


# -- writing --------------------------------------------------------------------------------


def write_atomic(path: Path, text: str, backup: bool = True) -> Path | None:
    """Replace `path` with `text` so a reader (or a power cut) sees the old or the new file,
    never half of one: a temp file in the same folder, fsync, rename, fsync the folder.
    With `backup`, the previous content is kept as `<file>.bak` first (same procedure).
    Returns the backup's path (None when there was no previous file or no backup)."""
    bak: Path | None = None
    mode = 0o640
    if path.exists():
        mode = path.stat().st_mode & 0o7777
        if backup:
            bak = path.with_name(path.name + ".bak")
            _replace(bak, path.read_bytes(), mode)
    _replace(path, text.encode("utf-8"), mode)
    return bak


def _replace(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def append_entry(
    text: str, section: str, entry: Mapping[str, object], source: str = "config"
) -> Checked:
    """`text` with `entry` appended to the top-level list `section` (made if missing),
    validated like `apply_edits`; comments elsewhere in the file are kept."""
    doc = load_document(text)
    items = doc.get(section)
    if items is None:
        items = CommentedSeq()
        doc[section] = items
    if not isinstance(items, CommentedSeq):
        raise KeyError(f"{section}: not a list")
    items.append(CommentedMap(entry))
    return _checked(text, dump_document(doc), source)
