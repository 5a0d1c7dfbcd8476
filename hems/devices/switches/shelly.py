"""Shelly Gen2+ local RPC over HTTP: `Switch.GetStatus` and `Switch.Set` for one channel.

`GET /rpc/Switch.GetStatus?id=N` answers `{"id": N, "output": true, "apower": 1995.3,
"aenergy": {"total": 1234.5, ...}, ...}` (W, Wh); `GET /rpc/Switch.Set?id=N&on=true` switches.
A device with a password wants HTTP digest auth as user `admin`.
"""

from __future__ import annotations

import httpx

from hems.devices.switches.config import ShellyRelay
from hems.devices.switches.relay import RelayStatus, get_json, new_client, number
from hems.errors import BadValue


def parse_status(body: dict[str, object], device_id: str) -> RelayStatus:
    """A `Switch.GetStatus` answer to a RelayStatus (pure)."""
    output = body.get("output")
    if not isinstance(output, bool):
        raise BadValue(device_id, f"Switch.GetStatus: output is not true/false ({output!r})")
    power = body.get("apower")
    energy = body.get("aenergy")
    total = energy.get("total") if isinstance(energy, dict) else None
    return RelayStatus(
        on=output,
        power_w=None if power is None else number(power, "apower", device_id),
        energy_wh=None if total is None else number(total, "aenergy.total", device_id),
    )


class ShellyClient:
    def __init__(self, device_id: str, cfg: ShellyRelay) -> None:
        self.device_id = device_id
        self._channel = str(cfg.channel)
        auth = (
            httpx.DigestAuth("admin", cfg.password.get_secret_value())
            if cfg.password is not None
            else None
        )
        self._http = new_client(cfg.host, cfg.port, cfg.timeout_s, auth)

    async def status(self) -> RelayStatus:
        body = await get_json(
            self._http, self.device_id, "/rpc/Switch.GetStatus", {"id": self._channel}
        )
        return parse_status(body, self.device_id)

    async def set_on(self, on: bool) -> None:
        params = {"id": self._channel, "on": "true" if on else "false"}
        await get_json(self._http, self.device_id, "/rpc/Switch.Set", params)

    async def aclose(self) -> None:
        await self._http.aclose()
