"""Render the configuration reference (Markdown) from the pydantic models.

The README's reference section is this script's output; a test checks they agree, so the
reference cannot drift from the code. Run: .venv/bin/python scripts/config_reference.py
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hems.config import Config

BEGIN = "<!-- config-reference:begin -->"
END = "<!-- config-reference:end -->"


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        args = get_args(annotation)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        k, v = get_args(annotation)
        return f"map {_type_name(k)} → {_type_name(v)}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return annotation.__name__
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _bounds(info: FieldInfo) -> str:
    parts = []
    for meta in info.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sym} {value}")
        pattern = getattr(meta, "pattern", None)
        if pattern:
            parts.append(f"pattern `{pattern}`")
    return ", ".join(parts)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    if info.default_factory is not None:
        try:
            value = info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(section defaults)"
        return f"`{value!r}`"
    if info.default is PydanticUndefined:
        return ""
    value = info.default
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    return f"`{value!r}`" if not isinstance(value, BaseModel) else "(section defaults)"


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _models(a)]


def render() -> str:
    out: list[str] = []
    seen: set[type[BaseModel]] = set()
    queue: list[tuple[str, type[BaseModel]]] = [("", Config)]
    while queue:
        path, model = queue.pop(0)
        if model in seen:
            continue
        seen.add(model)
        title = path or "top level"
        doc = (model.__doc__ or "").strip().splitlines()
        out.append(f"#### `{title}` ({model.__name__})\n")
        if doc and not doc[0].startswith(("Usage docs", "!!! ")):
            out.append(doc[0] + "\n")
        out.append("| key | type | default | constraints / meaning |")
        out.append("| --- | --- | --- | --- |")
        for name, info in model.model_fields.items():
            meaning = " ".join(x for x in (_bounds(info), info.description or "") if x)
            out.append(
                f"| `{name}` | {_type_name(info.annotation)} | {_default(info)} | {meaning} |"
            )
            for sub in _models(info.annotation):
                sub_path = f"{path}.{name}" if path else name
                if get_origin(info.annotation) is list or "list" in _type_name(info.annotation):
                    sub_path += "[]"
                queue.append((sub_path, sub))
        out.append("")
    return "\n".join(out).replace("|  |", "| |")


def splice(readme: str, reference: str) -> str:
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{reference}\n{END}{tail}"


if __name__ == "__main__":
    readme_path = Path(__file__).resolve().parents[1] / "README.md"
    if "--write" in sys.argv:
        readme_path.write_text(splice(readme_path.read_text(), render()))
    else:
        print(render())
