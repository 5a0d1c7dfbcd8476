"""JSON from untrusted peers, bounded before the recursive parser sees it."""

from __future__ import annotations

import json
from typing import Any


class JsonTooLarge(ValueError):
    """The body is longer than allowed (HTTP 413)."""


def json_depth(raw: bytes) -> int:
    """Deepest nesting of JSON arrays/objects in `raw`, outside strings. A linear scan, so a
    hostile body (100k '[') cannot reach the recursive parser."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def loads_bounded(raw: bytes, *, max_bytes: int, max_depth: int, what: str = "body") -> Any:
    """`json.loads(raw)` after checking size and nesting; ValueError naming `what` if not."""
    if len(raw) > max_bytes:
        raise JsonTooLarge(f"{what}: {len(raw)} bytes exceeds {max_bytes}")
    if json_depth(raw) > max_depth:
        raise ValueError(f"{what}: nested deeper than {max_depth} levels")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{what}: not JSON ({exc})") from None
