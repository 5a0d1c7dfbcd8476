"""Server-side HTML: Jinja2 templates from hems/web/templates, autoescaped, strict about
undefined names (a typo in a template fails its test instead of rendering blank).

Jinja2 is imported at the first page rendered, not with the daemon (about 4 MiB of RSS a
headless gateway never needs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Environment

_ENV: Environment | None = None


def _env() -> Environment:
    global _ENV
    if _ENV is None:
        from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

        _ENV = Environment(
            loader=PackageLoader("hems.web", "templates"),
            autoescape=select_autoescape(("html", "svg")),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _ENV


def render(name: str, **context: Any) -> str:
    return _env().get_template(name).render(**context)
