"""OCPP-J framing done strictly: the right CallError code for every kind of bad frame.

The `ocpp` package's own router logs and drops unparseable frames (the sender never learns),
swaps NotImplemented and NotSupported relative to the OCPP-J text, and answers a repeated
message id twice. `StrictRouting` is mixed in before `ocpp.v16/v201.ChargePoint` (for the
central system and the simulator alike) and fixes that:

| what arrives             | 1.6 code                     | 2.0.1 code                    |
| ------------------------ | ---------------------------- | ----------------------------- |
| not JSON                 | FormationViolation           | RpcFrameworkError             |
| nested too deeply        | FormationViolation           | FormatViolation               |
| not an array, no id      | ProtocolError                | RpcFrameworkError             |
| unknown MessageTypeId    | ProtocolError                | MessageTypeNotSupported       |
| action unknown           | NotImplemented               | NotImplemented                |
| action known, no handler | NotSupported                 | NotSupported                  |
| extra property           | FormationViolation           | FormatViolation               |
| missing, too many items  | OccurenceConstraintViolation | OccurrenceConstraintViolation |
| wrong JSON type          | TypeConstraintViolation      | TypeConstraintViolation       |
| bad enum, length, range  | PropertyConstraintViolation  | PropertyConstraintViolation   |
| message id used twice    | ProtocolError                | RpcFrameworkError             |
| handler failed           | InternalError                | InternalError                 |

An answer (CallResult/CallError) that arrives while no CALL is outstanding is logged and
dropped; one with a different id than the outstanding CALL is dropped by `ocpp.call`.
"""

from __future__ import annotations

import decimal
import json
from collections import OrderedDict
from functools import cache
from importlib import import_module
from typing import Any

import structlog
from jsonschema.exceptions import ValidationError as SchemaError
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, CallResult, MessageType, get_validator

log = structlog.get_logger(__name__)

# A version's enums are imported when a charger speaks it: ocpp.v201's modules are 2.6 MiB RSS.
_ENUMS = {"1.6": "ocpp.v16.enums", "2.0.1": "ocpp.v201.enums"}


@cache
def _known_actions(version: str) -> frozenset[str]:
    """The actions OCPP `version` defines (empty for a version we do not speak)."""
    if version not in _ENUMS:
        return frozenset()
    return frozenset(a.value for a in import_module(_ENUMS[version]).Action)


_DECIMAL_ACTIONS_16 = {"SetChargingProfile", "RemoteStartTransaction"}
SEEN_IDS_KEPT = 512


class FrameError(Exception):
    def __init__(
        self, code: str, description: str, unique_id: str = "-1", reply: bool = True
    ) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.unique_id = unique_id
        self.reply = reply


def _codes(version: str) -> dict[str, str]:
    v16 = version == "1.6"
    return {
        "format": "FormationViolation" if v16 else "FormatViolation",
        "json": "FormationViolation" if v16 else "RpcFrameworkError",  # frame is not JSON
        "occurrence": "OccurenceConstraintViolation" if v16 else "OccurrenceConstraintViolation",
        "rpc": "ProtocolError" if v16 else "RpcFrameworkError",
        "type_id": "ProtocolError" if v16 else "MessageTypeNotSupported",
    }


def parse_frame(raw: str | bytes, version: str) -> Call | CallResult | CallError:
    """One websocket frame to a message; FrameError with the OCPP-J code otherwise.

    A malformed *answer* raises FrameError with `reply=False`: answering an answer could
    start an endless error ping-pong between two strict peers.
    """
    codes = _codes(version)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FrameError(codes["json"], "frame is not valid JSON") from None
    except RecursionError:  # the decoder's own depth limit: answer, do not drop the link
        raise FrameError(codes["format"], "frame is nested too deeply") from None
    if not isinstance(data, list) or len(data) < 3:
        raise FrameError(codes["rpc"], "frame must be a JSON array [type, id, …]")
    type_id = data[0]
    unique_id = data[1] if isinstance(data[1], str) and data[1] else "-1"
    if type_id in (MessageType.CallResult, MessageType.CallError):
        if type_id == MessageType.CallResult and len(data) == 3:
            return CallResult(unique_id, data[2])
        if type_id == MessageType.CallError and len(data) == 5:
            return CallError(unique_id, data[2], data[3], data[4])
        raise FrameError(codes["rpc"], f"answer of type {type_id} is malformed", reply=False)
    if type_id != MessageType.Call:
        raise FrameError(codes["type_id"], f"message type {type_id!r} is not supported", unique_id)
    if unique_id == "-1" or len(unique_id) > 36:
        raise FrameError(codes["rpc"], "message id must be a string of 1..36 characters")
    if len(data) != 4 or not isinstance(data[2], str) or not isinstance(data[3], dict):
        raise FrameError(codes["rpc"], "CALL must be [2, id, action, {payload}]", unique_id)
    return Call(unique_id, data[2], data[3])


def check_payload(version: str, action: str, payload: dict[str, Any], type_id: int) -> None:
    """Validate against the OCPP JSON schema; FrameError with the matching code."""
    codes = _codes(version)
    parse_float: Any = float
    if version == "1.6" and type_id == MessageType.Call and action in _DECIMAL_ACTIONS_16:
        parse_float = decimal.Decimal  # the 1.6 schema's multipleOf 0.1 needs decimals
        payload = json.loads(json.dumps(payload), parse_float=decimal.Decimal)
    try:
        validator = get_validator(type_id, action, version, parse_float=parse_float)
    except OSError:
        raise FrameError("NotImplemented", f"no schema for {action}") from None
    try:
        error: SchemaError | None = next(iter(validator.iter_errors(payload)), None)
    except RecursionError:  # parsed, but too deep for the schema walk
        raise FrameError(codes["format"], f"{action}: payload is nested too deeply") from None
    if error is None:
        return
    where = "/".join(str(p) for p in error.absolute_path) or "(payload)"
    kind = error.validator
    if kind == "additionalProperties":
        code = codes["format"]
    elif kind in ("required", "minItems", "maxItems"):
        code = codes["occurrence"]
    elif kind == "type":
        code = "TypeConstraintViolation"
    else:
        code = "PropertyConstraintViolation"
    raise FrameError(code, f"{action}: {where}: {error.message}"[:255])


class StrictRouting:
    """Mixin for `ocpp.vXX.ChargePoint`: strict framing plus bookkeeping hooks."""

    _ocpp_version: str
    id: str

    def _strict_init(self) -> None:
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self.frame_errors = 0

    def _on_any_message(self) -> None:
        """Called for every frame received (liveness); override."""

    def _gate(self, action: str) -> None:
        """Raise an OCPPError to refuse an action (e.g. SecurityError while pending)."""

    async def _send_error(self, unique_id: str, code: str, description: str) -> None:
        await self._send(CallError(unique_id, code, description, {}).to_json())  # type: ignore[attr-defined]

    async def route_message(self, raw_msg: str | bytes) -> None:
        self._on_any_message()
        version = self._ocpp_version
        try:
            msg = parse_frame(raw_msg, version)
            if isinstance(msg, Call):
                if msg.unique_id in self._seen_ids:
                    raise FrameError(
                        _codes(version)["rpc"],
                        f"message id {msg.unique_id!r} was already used",
                        msg.unique_id,
                    )
                self._seen_ids[msg.unique_id] = None
                if len(self._seen_ids) > SEEN_IDS_KEPT:
                    self._seen_ids.popitem(last=False)
                handlers = self.route_map.get(msg.action)  # type: ignore[attr-defined]
                if handlers is None or "_on_action" not in handlers:
                    known = msg.action in _known_actions(version)
                    raise FrameError(
                        "NotSupported" if known else "NotImplemented",
                        f"action {msg.action!r} is "
                        + ("not supported here" if known else f"unknown in OCPP {version}"),
                        msg.unique_id,
                    )
                try:
                    self._gate(msg.action)
                    check_payload(version, msg.action, msg.payload, MessageType.Call)
                except FrameError as exc:
                    exc.unique_id = msg.unique_id
                    raise
        except FrameError as exc:
            self.frame_errors += 1
            log.warning("ocpp frame refused", cp=self.id, code=exc.code, reason=exc.description)
            if exc.reply:
                await self._send_error(exc.unique_id, exc.code, exc.description)
            return
        except OCPPError as exc:
            uid = getattr(locals().get("msg"), "unique_id", "-1")
            log.warning("ocpp call refused", cp=self.id, code=exc.code, reason=exc.description)
            await self._send_error(uid, exc.code, exc.description)
            return
        if isinstance(msg, Call):
            try:
                await self._handle_call(msg)  # type: ignore[attr-defined]
            except OCPPError as exc:
                await self._send_error(msg.unique_id, exc.code, exc.description)
            except Exception as exc:  # a handler bug must not end the connection
                log.exception("ocpp handler failed", cp=self.id, action=msg.action)
                await self._send_error(msg.unique_id, "InternalError", type(exc).__name__)
            return
        if not self._call_lock.locked():  # type: ignore[attr-defined]
            log.warning("ocpp unsolicited answer dropped", cp=self.id, message_id=msg.unique_id)
            return
        self._response_queue.put_nowait(msg)  # type: ignore[attr-defined]
