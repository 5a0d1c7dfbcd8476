"""Tasmota over HTTP: `/cm?cmnd=Power1 On|Off`, `Power1` (its state) and `Status 8` (energy).

`Power1` answers `{"POWER1": "ON"}` (a one-relay device may say `"POWER"`); `Status 8` answers
`{"StatusSNS": {"ENERGY": {"Power": 1995, "Total": 1.234, ...}}}` with Total in kWh and Power
a list on multi-channel meters. A device with a web password takes `user` and `password`.
"""

from __future__ import annotations

from hems.devices.switches.config import TasmotaRelay
from hems.devices.switches.relay import RelayStatus, get_json, new_client, number
from hems.errors import BadValue


def parse_power_state(body: dict[str, object], channel: int, device_id: str) -> bool:
    """A `PowerN` answer to on/off (pure)."""
    value = body.get(f"POWER{channel}")
    if value is None and channel == 1:
        value = body.get("POWER")
    if value not in ("ON", "OFF"):
        raise BadValue(device_id, f"Power{channel}: not ON/OFF ({value!r})")
    return value == "ON"


def parse_energy(
    body: dict[str, object], channel: int, device_id: str
) -> tuple[float | None, float | None]:
    """A `Status 8` answer to (power_w, energy_wh); (None, None) without an energy meter."""
    sns = body.get("StatusSNS")
    energy = sns.get("ENERGY") if isinstance(sns, dict) else None
    if not isinstance(energy, dict):
        return None, None

    def pick(value: object) -> object:
        if isinstance(value, list):
            return value[channel - 1] if len(value) >= channel else None
        return value

    power, total = pick(energy.get("Power")), pick(energy.get("Total"))
    return (
        None if power is None else number(power, "ENERGY.Power", device_id),
        None if total is None else number(total, "ENERGY.Total", device_id) * 1000.0,
    )


class TasmotaClient:
    def __init__(self, device_id: str, cfg: TasmotaRelay) -> None:
        self.device_id = device_id
        self._channel = cfg.channel
        self._auth: dict[str, str] = {}
        if cfg.username is not None:
            self._auth["user"] = cfg.username
        if cfg.password is not None:
            self._auth["password"] = cfg.password.get_secret_value()
        self._http = new_client(cfg.host, cfg.port, cfg.timeout_s, None)

    async def _cmnd(self, command: str) -> dict[str, object]:
        return await get_json(self._http, self.device_id, "/cm", {**self._auth, "cmnd": command})

    async def status(self) -> RelayStatus:
        on = parse_power_state(
            await self._cmnd(f"Power{self._channel}"), self._channel, self.device_id
        )
        power_w, energy_wh = parse_energy(
            await self._cmnd("Status 8"), self._channel, self.device_id
        )
        return RelayStatus(on, power_w, energy_wh)

    async def set_on(self, on: bool) -> None:
        body = await self._cmnd(f"Power{self._channel} {'On' if on else 'Off'}")
        if parse_power_state(body, self._channel, self.device_id) != on:
            raise BadValue(
                self.device_id, f"Power{self._channel}: did not switch {'on' if on else 'off'}"
            )

    async def aclose(self) -> None:
        await self._http.aclose()
