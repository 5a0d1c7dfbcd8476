"""The REST API, version 1: `/api/v1/…` on the page's server, behind the same guard.

`ROUTES` is the one route table: each `Operation` names its handler, its request and response
models (hems.web.apimodels), and what it may answer. aiohttp's routes and the OpenAPI 3.1
document (`/api/v1/openapi.json`, rendered at `/api/v1/docs`) are both made from it, so the
spec cannot drift from what is served. Handlers read the same providers as the page
(`add_json`) and change things only through the page's actions (hems.web.actions, by name),
so the API and the page apply the same rules; the config file is changed through the
installer form's own check (hems.web.configform.check_form) and write.

Errors are problem+json (hems.web.problem). Versioning: inside v1 only additions (fields,
endpoints, enum values in responses); a removal or a change of meaning needs /api/v2/.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from hems.config import ConfigErrors
from hems.configedit import text_digest, write_atomic
from hems.core.clock import Clock
from hems.core.jsonsafe import JsonTooLarge, loads_bounded
from hems.core.quantities import site_values
from hems.core.state import SiteState
from hems.errors import ConfigError, HemsError
from hems.store.timeseries import ReadingStore
from hems.web import apimodels as m
from hems.web.configform import check_form
from hems.web.problem import problem, validation_problem
from hems.web.render import render

log = structlog.get_logger(__name__)

PREFIX = "/api/v1"
MAX_BODY_BYTES = 64 * 1024
_MAX_DEPTH = 16

Provider = Callable[[], Any]
Action = Callable[[dict[str, Any]], Awaitable[Any]]
Result = BaseModel | tuple[BaseModel, int] | web.StreamResponse
Audit = Callable[[web.Request, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """The config file the daemon started from, and how it restarts to run a new one."""

    path: Path
    restart: Callable[[], None]


@dataclass(frozen=True, slots=True)
class Operation:
    """One endpoint: what it takes, what it answers, and who may call it."""

    method: str
    path: str  # under PREFIX, with {params}
    handler: str  # the ApiV1 method's name; also the OpenAPI operationId
    summary: str
    tag: str
    response: type[BaseModel] | None  # None: not JSON (see media)
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    public: bool = False
    media: str = "application/json"
    errors: tuple[int, ...] = ()  # beyond 401/403/404 (and 400/413/415/422 with a body)


ROUTES: tuple[Operation, ...] = (
    Operation("GET", "/health", "health", "Health, public for probes (503 with reasons)",
              "site", m.HealthOut, public=True, errors=(503,)),
    Operation("GET", "/site", "site", "The site's figures and every latest reading",
              "site", m.SiteOut),
    Operation("GET", "/devices", "devices", "Devices with their role and health", "site",
              m.DevicesOut),
    Operation("GET", "/series", "series", "One device's stored history, rolled up", "site",
              m.SeriesOut, query=m.SeriesQuery, errors=(422,)),
    Operation("GET", "/plan", "plan", "The current plan, per slot", "plan", m.PlanOut),
    Operation("GET", "/control", "control", "The control loop's status", "control",
              m.ControlOut),
    Operation("GET", "/control/interventions", "interventions",
              "Recent safety and control interventions", "control", m.InterventionsOut),
    Operation("POST", "/devices/{device_id}/override", "override",
              "Hold a device at a target until the expiry (the guard still applies)",
              "control", m.OverrideOut, body=m.OverrideIn),
    Operation("GET", "/chargers", "chargers", "Chargers, waiting identities, sessions, modes",
              "chargers", m.ChargersOut),
    Operation("POST", "/chargers/{charger_id}/mode", "ev_mode", "Set a charger's mode",
              "chargers", m.EvModeOut, body=m.EvModeIn),
    Operation("GET", "/ev-sessions", "ev_sessions", "The EV sessions, by charger", "chargers",
              m.EvSessionsOut),
    Operation("POST", "/chargers/{charger_id}/session", "ev_session",
              "Set the car's departure and target (energy, or SoC now and wanted)",
              "chargers", m.EvSessionOut, body=m.EvSessionIn),
    Operation("POST", "/pending-chargers/{identity}/accept", "accept_charger",
              "Accept a charger waiting for acceptance", "chargers", m.ChargerDecisionOut),
    Operation("POST", "/pending-chargers/{identity}/reject", "reject_charger",
              "Refuse a charger waiting for acceptance", "chargers", m.ChargerDecisionOut),
    Operation("GET", "/batteries", "batteries", "Battery modes offered and overrides held",
              "batteries", m.BatteriesOut),
    Operation("POST", "/batteries/{device_id}/mode", "battery_mode",
              "Hold a battery in one of its modes until the expiry", "batteries",
              m.BatteryModeOut, body=m.BatteryModeIn),
    Operation("GET", "/flex/events", "flex_events", "Flexibility events as decided", "flex",
              m.FlexEventsOut),
    Operation("POST", "/flex/events/{event_id}/opt-out", "flex_opt_out",
              "Opt out of an accepted event while the policy allows", "flex", m.OptOutOut),
    Operation("GET", "/flex/reports", "flex_reports", "Delivery reports as sent", "flex",
              m.FlexReportsOut),
    Operation("GET", "/config", "config", "The running configuration (secrets hidden)",
              "config", m.ConfigOut),
    Operation("PATCH", "/config", "config_patch",
              "Change fields of the installer's config form in the file (then restart)",
              "config", m.ConfigPatchOut, body=m.ConfigPatchIn, errors=(409, 500)),
    Operation("GET", "/stream", "stream",
              "Server-sent events: site, devices, plan, intervention, flex (see the README)",
              "events", None, media="text/event-stream", errors=(503,)),
    Operation("GET", "/openapi.json", "openapi", "This document (OpenAPI 3.1)", "meta", None),
    Operation("GET", "/docs", "docs", "This document as a page", "meta", None,
              media="text/html"),
)  # fmt: skip

# Path parameters whose value an action names in its error: unknown there is a 404.
_PATH_FIELDS = {"device_id", "charger_id", "identity", "event_id"}


class ApiV1:
    """The v1 handlers over the page's sources. `providers` and `actions` are the server's
    live registries (stages add to them after this is built)."""

    def __init__(
        self,
        state: SiteState,
        clock: Clock,
        store: ReadingStore | None,
        site_name: str,
        providers: Mapping[str, Provider],
        actions: Mapping[str, Action],
        health: Callable[[], tuple[dict[str, Any], int]],
        stream: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> None:
        self._state = state
        self._clock = clock
        self._store = store
        self._site_name = site_name
        self._providers = providers
        self._actions = actions
        self._health_body = health
        self._sse = stream
        self.config: Callable[[], BaseModel] | None = None
        self.config_file: ConfigFile | None = None
        self.audit: Audit | None = None  # the security log: who changed what (no values)
        self._spec: dict[str, Any] | None = None

    def add_routes(self, app: web.Application) -> None:
        for op in ROUTES:
            app.router.add_route(op.method, PREFIX + op.path, self._endpoint(op))

    def _endpoint(self, op: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        handler: Callable[..., Awaitable[Result]] = getattr(self, f"_{op.handler}")

        async def serve(request: web.Request) -> web.StreamResponse:
            kwargs: dict[str, Any] = {}
            if op.query is not None:
                try:
                    kwargs["query"] = op.query.model_validate(dict(request.query))
                except ValidationError as exc:
                    return validation_problem(exc, "query")
            if op.body is not None:
                parsed = await _read_json(request)
                if isinstance(parsed, web.Response):
                    return parsed
                try:
                    kwargs["body"] = op.body.model_validate(parsed)
                except ValidationError as exc:
                    return validation_problem(exc)
            try:
                result = await handler(request, **kwargs)
            except _NotConfigured as exc:
                return problem(404, f"{exc.args[0]}: not configured on this site")
            if isinstance(result, web.StreamResponse):
                return result
            model, status = result if isinstance(result, tuple) else (result, 200)
            return web.Response(
                text=model.model_dump_json(), status=status, content_type="application/json"
            )

        serve.__name__ = op.handler
        return serve

    # -- reads --------------------------------------------------------------------------------
    async def _health(self, _: web.Request) -> Result:
        body, status = self._health_body()
        return m.HealthOut.model_validate(body), status

    async def _site(self, _: web.Request) -> Result:
        return m.SiteOut(
            site=self._site_name,
            now=self._clock.now().isoformat(),
            summary=site_values(self._state),
            readings=[m.ReadingOut.model_validate(r) for r in self._state.snapshot()],
            store=(
                m.StoreStatsOut.model_validate(self._store.stats, from_attributes=True)
                if self._store is not None
                else None
            ),
        )

    async def _devices(self, _: web.Request) -> Result:
        state = self._state
        return m.DevicesOut(
            devices=[
                m.DeviceOut(
                    device_id=d,
                    role=str(role),
                    stale=state.is_stale(d),
                    reason=state.down_reason(d),
                )
                for d, role in sorted(state.devices.items())
            ]
        )

    async def _series(self, _: web.Request, query: m.SeriesQuery) -> Result:
        if self._store is None:
            raise _NotConfigured("store")
        resolution_s = 1800 if query.minutes > 24 * 60 else 60
        until = self._clock.now()
        rows = await self._store.series(
            query.device,
            query.quantity,
            until - timedelta(minutes=query.minutes),
            until,
            resolution_s,
        )
        return m.SeriesOut(
            device=query.device,
            quantity=str(query.quantity),
            resolution_s=resolution_s,
            rows=[m.SeriesRow.model_validate(r) for r in rows],
        )

    async def _plan(self, _: web.Request) -> Result:
        return m.PlanOut(plan=await self._read("plan"))

    async def _control(self, _: web.Request) -> Result:
        control = await self._read("control")
        return m.ControlOut(status=control["status"], flex=control["flex"])

    async def _interventions(self, _: web.Request) -> Result:
        control = await self._read("control")
        return m.InterventionsOut(interventions=control["interventions"])

    async def _chargers(self, _: web.Request) -> Result:
        return m.ChargersOut.model_validate(await self._read("chargers"))

    async def _ev_sessions(self, _: web.Request) -> Result:
        return m.EvSessionsOut(sessions=(await self._read("chargers"))["sessions"])

    async def _batteries(self, _: web.Request) -> Result:
        return m.BatteriesOut.model_validate(await self._read("batteries"))

    async def _flex_events(self, _: web.Request) -> Result:
        view = await self._read("flex-events")
        control = self._providers.get("control")
        live = (await _value(control))["flex"] if control is not None else None
        return m.FlexEventsOut(events=view["events"], rejected=view["rejected"], live=live)

    async def _flex_reports(self, _: web.Request) -> Result:
        return m.FlexReportsOut(reports=await self._read("reports"))

    async def _config(self, _: web.Request) -> Result:
        if self.config is None:
            raise _NotConfigured("config")
        digest = None
        if self.config_file is not None:
            text = await asyncio.to_thread(self.config_file.path.read_text, encoding="utf-8")
            digest = text_digest(text)
        # mode="json" writes every SecretStr as "**********".
        return m.ConfigOut(config=self.config().model_dump(mode="json"), file_sha256=digest)

    async def _config_patch(self, request: web.Request, body: m.ConfigPatchIn) -> Result:
        """The installer's form, submitted as JSON: the same check (`check_form`), the same
        atomic write (previous file kept as `.bak`), and the same restart to apply it."""
        if self.config_file is None:
            raise _NotConfigured("config-file")
        path = self.config_file.path
        text = path.read_text(encoding="utf-8")
        if body.base_sha256 is not None and body.base_sha256 != text_digest(text):
            reason = "the config file changed since it was read; read it again"
            return problem(
                409, f"config: {path}: {reason}", [{"field": "base_sha256", "reason": reason}]
            )
        try:
            result = check_form(text, {k: _form_text(v) for k, v in body.changes.items()},
                                source=str(path))  # fmt: skip
        except ConfigErrors as exc:  # "config: not valid YAML: …"
            reason = exc.problems[0].removeprefix("config: ")
            detail = f"config: {path} {reason}; fix the file by hand first"
            return problem(409, detail, [{"field": "config", "reason": reason}])
        names = {f.name for f in result.fields}
        errors = [
            {"field": k, "reason": "not a field of the installer's config form"}
            for k in body.changes
            if k not in names
        ]
        if not errors:
            errors = [
                {"field": where or "request", "reason": message}
                for where, messages in result.problems.items()
                for message in messages
            ]
        if errors or result.checked is None:
            detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
            return problem(422, detail, errors)
        checked = result.checked
        backup = None
        if checked.changed:
            try:
                backup = write_atomic(path, checked.new_text)
            except OSError as exc:
                return problem(500, f"config: cannot write {path}: {exc.strerror or exc}")
            fields = ", ".join(result.changed)
            log.warning("config file changed through the API", path=str(path), fields=fields)
            if self.audit is not None:
                await self.audit(request, f"config file changed: {fields}")
        running = self.config() if self.config is not None else None
        required = checked.config != running if running is not None else checked.changed
        restarting = body.restart and required
        if restarting:
            log.warning("restarting to run the changed config file", path=str(path))
            self.config_file.restart()
        return m.ConfigPatchOut(
            changed=list(result.changed),
            written=checked.changed,
            backup=str(backup) if backup is not None else None,
            restart_required=required,
            restarting=restarting,
            file_sha256=text_digest(checked.new_text if checked.changed else text),
        )

    async def _stream(self, request: web.Request) -> Result:
        return await self._sse(request)

    async def _openapi(self, _: web.Request) -> Result:
        return web.json_response(self.spec())

    async def _docs(self, _: web.Request) -> Result:
        return web.Response(text=docs_page(self.spec()), content_type="text/html")

    async def _read(self, name: str) -> Any:
        provider = self._providers.get(name)
        if provider is None:
            raise _NotConfigured(name)
        return await _value(provider)

    # -- changes: each one the page's action, by name -------------------------------------------
    async def _override(self, request: web.Request, body: m.OverrideIn) -> Result:
        device_id = request.match_info["device_id"]
        result = await self._act("override", {"device_id": device_id, **body.model_dump()})
        return result if isinstance(result, web.Response) else m.OverrideOut(**result)

    async def _ev_mode(self, request: web.Request, body: m.EvModeIn) -> Result:
        charger_id = request.match_info["charger_id"]
        result = await self._act("ev-mode", {"charger_id": charger_id, "mode": body.mode})
        return result if isinstance(result, web.Response) else m.EvModeOut(**result)

    async def _ev_session(self, request: web.Request, body: m.EvSessionIn) -> Result:
        fields = {"charger_id": request.match_info["charger_id"]}
        result = await self._act("ev-session", fields | body.model_dump(exclude_none=True))
        return result if isinstance(result, web.Response) else m.EvSessionOut(**result)

    async def _battery_mode(self, request: web.Request, body: m.BatteryModeIn) -> Result:
        fields = {"device_id": request.match_info["device_id"], "mode": str(body.mode)}
        fields |= body.model_dump(exclude={"mode"}, exclude_none=True)
        result = await self._act("battery-mode", fields)
        return result if isinstance(result, web.Response) else m.BatteryModeOut(**result)

    async def _accept_charger(self, request: web.Request) -> Result:
        identity = request.match_info["identity"]
        result = await self._act("accept-charger", {"identity": identity})
        if isinstance(result, web.Response):
            return result
        return m.ChargerDecisionOut(identity=identity, decision="accepted")

    async def _reject_charger(self, request: web.Request) -> Result:
        identity = request.match_info["identity"]
        result = await self._act("reject-charger", {"identity": identity})
        if isinstance(result, web.Response):
            return result
        return m.ChargerDecisionOut(identity=identity, decision="rejected")

    async def _flex_opt_out(self, request: web.Request) -> Result:
        result = await self._act("flex-opt-out", {"event_id": request.match_info["event_id"]})
        return result if isinstance(result, web.Response) else m.OptOutOut(**result)

    async def _act(self, name: str, body: dict[str, Any]) -> dict[str, Any] | web.Response:
        """Run the page's action; its "field: reason" refusal becomes a problem naming the
        field (404 when the field is the path's: the thing does not exist here)."""
        action = self._actions.get(name)
        if action is None:
            raise _NotConfigured(name)
        try:
            result = await action(body)
        except (ConfigError, HemsError, ValueError) as exc:
            log.warning("api action refused", action=name, error=str(exc))
            field = str(exc).partition(":")[0]
            return problem(404 if field in _PATH_FIELDS else 422, str(exc))
        return dict(result)

    # -- the document -------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        if self._spec is None:
            self._spec = openapi(ROUTES)
        return self._spec


def _form_text(value: m.ConfigValue) -> str:
    """A JSON value as the form's input would hold it (null: the empty field)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _NotConfigured(Exception):
    """The stage behind an endpoint is not part of this site (no chargers, no flex)."""


async def _value(provider: Provider) -> Any:
    value = provider()
    return await value if inspect.isawaitable(value) else value


async def _read_json(request: web.Request) -> Any:
    """The request's JSON body, bounded, or a problem naming what is wrong with it."""
    if request.content_type != "application/json":
        return problem(415, "content-type: send application/json")
    try:
        raw = await request.read()
        return loads_bounded(raw or b"{}", max_bytes=MAX_BODY_BYTES, max_depth=_MAX_DEPTH)
    except web.HTTPRequestEntityTooLarge:
        return problem(413, f"body: larger than {MAX_BODY_BYTES} bytes")
    except JsonTooLarge as exc:
        return problem(413, str(exc))
    except ValueError as exc:  # "body: not JSON (…)", "body: nested deeper than …"
        return problem(400, str(exc))
    except LookupError as exc:  # an unknown charset in Content-Type
        return problem(400, f"body: unsupported charset ({exc})")


# -- OpenAPI 3.1 ---------------------------------------------------------------------------------
_REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"\{([^}]+)\}")


def openapi(routes: tuple[Operation, ...]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`, every schema generated from the pydantic models
    (one `$defs` pool, so a model used twice is one component)."""
    models: list[tuple[type[BaseModel], Any]] = [(m.Problem, "serialization")]
    for op in routes:
        if op.response is not None:
            models.append((op.response, "serialization"))
        if op.body is not None:
            models.append((op.body, "validation"))
        if op.query is not None:
            models.append((op.query, "validation"))
    refs, pool = models_json_schema(list(dict.fromkeys(models)), ref_template=_REF)
    schemas: dict[str, Any] = pool.get("$defs", {})
    paths: dict[str, Any] = {}
    for op in routes:
        item = paths.setdefault(PREFIX + op.path, {})
        item[op.method.lower()] = _operation(op, refs, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hems local API",
            "version": "1",
            "description": "The gateway's local REST API. Inside v1 only additions; "
            "removals and changes of meaning need v2.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API token "
                    "(`hems admin token create`); read-only tokens cannot change anything",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "hems_session",
                    "description": "the owner's page session; changes also need its "
                    "CSRF token in X-CSRF-Token and a same-origin request",
                },
            },
        },
        "security": [{"token": []}, {"session": []}],
    }


def _operation(op: Operation, refs: Mapping[Any, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    problem_ref = refs[(m.Problem, "serialization")]
    writes = op.method != "GET"
    out: dict[str, Any] = {
        "operationId": op.handler,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": [
            {
                "name": n,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 64},
            }
            for n in _PARAM.findall(op.path)
        ],
    }
    if op.query is not None:
        query = schemas[refs[(op.query, "validation")]["$ref"].rsplit("/", 1)[1]]
        required = set(query.get("required", ()))
        for name, schema in query["properties"].items():
            param = {"name": name, "in": "query", "required": name in required, "schema": schema}
            if "description" in schema:
                param["description"] = schema["description"]
            out["parameters"].append(param)
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    if op.response is not None:
        ok = {"application/json": {"schema": refs[(op.response, "serialization")]}}
    elif op.media == "application/json":
        ok = {"application/json": {"schema": {"type": "object"}}}
    else:
        ok = {op.media: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {"200": {"description": "OK", "content": ok}}
    statuses = set(op.errors) | {404, 405}
    if not op.public:
        statuses |= {401}
    if writes:
        statuses |= {400, 403, 413, 415, 422} if op.body is not None else {403, 422}
    for status in sorted(statuses):
        content = {"application/problem+json": {"schema": problem_ref}}
        if status == 503 and op.response is not None:  # health: the reasons, as JSON
            content = {"application/json": {"schema": refs[(op.response, "serialization")]}}
        responses[str(status)] = {"description": _DESCRIPTIONS[status], "content": content}
    out["responses"] = responses
    if op.public:
        out["security"] = []
    return out


_DESCRIPTIONS = {
    400: "Malformed request (not JSON)",
    401: "No session or token, or an unknown one",
    403: "A read-only token, or a session without CSRF token or from another site",
    404: "No such thing here (an unknown id, or the stage is not configured)",
    405: "Method not allowed",
    409: "The config file on disk is not valid YAML or not a mapping (fix it by hand), or it "
    "changed since `base_sha256`",
    413: "Body too large",
    415: "Body is not application/json",
    422: "A field is invalid (each one named in `errors`)",
    500: "The config file could not be written",
    503: "Unhealthy (health) or too many streams open",
}


def docs_page(spec: dict[str, Any]) -> str:
    """The document as HTML, rendered on the server (the CSP allows no inline script)."""
    operations = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ok = op["responses"]["200"]["content"]
            media, schema = next(iter(ok.items()))
            operations.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "id": op["operationId"],
                    "summary": op["summary"],
                    "tag": op["tags"][0],
                    "public": op.get("security") == [],
                    "parameters": op["parameters"],
                    "body": _ref_name(body.get("schema")),
                    "response": _ref_name(schema.get("schema")) or media,
                    "response_is_schema": _ref_name(schema.get("schema")) is not None,
                    "statuses": [s for s in op["responses"] if s != "200"],
                }
            )
    return render(
        "api_docs.html",
        title=spec["info"]["title"],
        version=spec["info"]["version"],
        operations=operations,
        schemas=[_schema_rows(n, s) for n, s in sorted(spec["components"]["schemas"].items())],
        descriptions=_DESCRIPTIONS,
    )


def _schema_rows(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    required = set(schema.get("required", ()))
    return {
        "name": name,
        "description": schema.get("description", ""),
        "enum": schema.get("enum"),
        "fields": [
            {
                "name": f,
                "type": _type_text(p),
                "required": f in required,
                "notes": p.get("description", ""),
            }
            for f, p in schema.get("properties", {}).items()
        ],
    }


def _type_text(schema: dict[str, Any]) -> str:
    """A JSON Schema in a few words: `number or null`, `list of ReadingOut`, …"""
    if "$ref" in schema:
        return str(_ref_name(schema))
    if "anyOf" in schema:
        return " or ".join(_type_text(s) for s in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    kind = schema.get("type", "any")
    if kind == "array":
        return "list of " + _type_text(schema.get("items", {}))
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "map of " + _type_text(schema["additionalProperties"])
    return str(kind)


def _ref_name(schema: dict[str, Any] | None) -> str | None:
    if not schema or "$ref" not in schema:
        return None
    return str(schema["$ref"]).rsplit("/", 1)[1]
