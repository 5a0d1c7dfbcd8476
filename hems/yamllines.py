"""YAML with line numbers, so a validation error can say where in the file it is.

Shared by the site config (`hems/config.py`) and the device profiles
(`hems/devices/modbus/profile.py`): both parse once and report `path: problem (line N)`.
"""

from __future__ import annotations

from typing import Any

import yaml

Loc = tuple[str | int, ...]


def load_with_lines(text: str) -> tuple[Any, dict[Loc, int]]:
    """One YAML document (safe loader) and the 1-based line of every path in it.

    A mapping key's path gets the line of the key itself. Raises `yaml.YAMLError` as
    `yaml.safe_load` does.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    if node is not None:
        _compose_lines(node, (), lines)
    return data, lines


def _compose_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            _compose_lines(value_node, (*loc, key), lines)
            lines[(*loc, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _compose_lines(item, (*loc, index), lines)


def line_for(loc: Loc, lines: dict[Loc, int]) -> int | None:
    """The line of `loc`, else of its deepest known ancestor (a missing key: its parent's)."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def format_loc(loc: Loc) -> str:
    """`devices[2].port`; the empty path reads `(top level)`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"
