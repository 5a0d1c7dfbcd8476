"""Errors of the v1 API as `application/problem+json` (RFC 9457): type, title, status,
detail, and `errors`, one `{field, reason}` per field at fault, so a client can point at the
input to fix. Messages elsewhere in hems are "field: reason"; they map onto one entry."""

from __future__ import annotations

import json
from http import HTTPStatus

from aiohttp import web
from pydantic import ValidationError

PROBLEM_TYPE = "application/problem+json"
# A problem type per status, relative to the API's docs page (RFC 9457 §3.1.1).
TYPE_BASE = "/api/v1/docs#problem-"


def problem(
    status: int,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {
        "type": f"{TYPE_BASE}{status}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "errors": errors if errors is not None else field_errors(detail),
    }
    return web.Response(
        text=json.dumps(body), status=status, content_type=PROBLEM_TYPE, headers=headers
    )


def field_errors(message: str) -> list[dict[str, str]]:
    """ "field: reason" as one entry; a message without a field names the request."""
    field, sep, reason = message.partition(": ")
    if not sep or not field or " " in field:
        return [{"field": "request", "reason": message}]
    return [{"field": field, "reason": reason}]


def validation_problem(exc: ValidationError, where: str = "body") -> web.Response:
    """A pydantic validation error: 422 naming each field (dotted path) and its reason."""
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]) or where, "reason": e["msg"]}
        for e in exc.errors(include_url=False)
    ]
    detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
    return problem(422, detail, errors)
