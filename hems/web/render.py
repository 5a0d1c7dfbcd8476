"""Server-side HTML: Jinja2 templates from hems/web/templates, autoescaped, strict about
undefined names (a typo in a template fails its test instead of rendering blank)."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

_ENV = Environment(
    loader=PackageLoader("hems.web", "templates"),
    autoescape=select_autoescape(("html", "svg")),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(name: str, **context: Any) -> str:
    return _ENV.get_template(name).render(**context)
