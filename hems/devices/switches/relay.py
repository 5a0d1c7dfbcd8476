"""One relay channel over local HTTP: what it reports, and the HTTP errors it may raise.

`RelayClient` is what the switch and SG-Ready adapters use; `shelly.ShellyClient` and
`tasmota.TasmotaClient` implement it. Every failure is a `DeviceError` with a one-line reason
(timed out, HTTP 500, unreachable, malformed answer), so callers log and count it alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

from hems.errors import BadValue, DeviceError, DeviceRejected, DeviceTimeout, DeviceUnreachable


@dataclass(frozen=True, slots=True)
class RelayStatus:
    on: bool  # the relay's output
    power_w: float | None  # measured through the relay; None: the channel has no meter
    energy_wh: float | None  # cumulative; None: not reported


class RelayClient(Protocol):
    async def status(self) -> RelayStatus: ...

    async def set_on(self, on: bool) -> None: ...

    async def aclose(self) -> None: ...


def number(value: object, what: str, device_id: str) -> float:
    """A finite number from a JSON answer, or BadValue naming the field."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadValue(device_id, f"{what}: not a number ({value!r})")
    return float(value)


async def get_json(
    http: httpx.AsyncClient, device_id: str, path: str, params: Mapping[str, str]
) -> dict[str, object]:
    """GET `path` and return its JSON object; every failure as a DeviceError."""
    try:
        resp = await http.get(path, params=params)
    except httpx.TimeoutException:
        raise DeviceTimeout(device_id, f"{path}: timed out after {http.timeout.read} s") from None
    except httpx.HTTPError as exc:
        raise DeviceUnreachable(device_id, f"{path}: {type(exc).__name__}: {exc}") from None
    if resp.status_code == 401:
        raise DeviceRejected(device_id, f"{path}: HTTP 401 (wrong or missing password)")
    if resp.status_code >= 500:
        # The device failed, not our value: the writer retries with a backoff.
        raise DeviceUnreachable(device_id, f"{path}: HTTP {resp.status_code}")
    if resp.status_code != 200:
        raise DeviceRejected(device_id, f"{path}: HTTP {resp.status_code}")
    try:
        body = resp.json()
    except ValueError:
        raise BadValue(device_id, f"{path}: answer is not JSON") from None
    if not isinstance(body, dict):
        raise BadValue(device_id, f"{path}: answer is not a JSON object")
    return body


def new_client(
    host: str, port: int, timeout_s: float, auth: httpx.Auth | None
) -> httpx.AsyncClient:
    # One connection per device at most; relays are small and serve few clients at once.
    return httpx.AsyncClient(
        base_url=f"http://{host}:{port}",
        auth=auth,
        timeout=timeout_s,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


__all__ = ["DeviceError", "RelayClient", "RelayStatus", "get_json", "new_client", "number"]
