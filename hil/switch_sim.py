"""Shelly Gen2+ and Tasmota relays over real local HTTP (aiohttp), with a load model.

`ShellySim` answers `/rpc/Switch.GetStatus?id=N` and `/rpc/Switch.Set?id=N&on=true|false`;
`TasmotaSim` answers `/cm?cmnd=PowerN`, `PowerN On|Off` and `Status 8`, checking `user` /
`password` when set. Each channel draws `load_w[ch]` while on (`drawing` can override, e.g. a
thermostat that holds 0 W, or a welded contact that draws while "off"). Faults: `fault =
"http500"` answers 500, `"hang"` never answers (until the fault is cleared or the server
stops), so clients hit their timeout. Requests are recorded in `requests`.
Digest auth (a Shelly with a password) is not simulated.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from aiohttp import web

Fault = Literal["http500", "hang"] | None


class _RelaySim:
    def __init__(self, load_w: dict[int, float]) -> None:
        self.load_w = dict(load_w)
        self.on: dict[int, bool] = {ch: False for ch in load_w}
        self.drawing: dict[int, float | None] = {ch: None for ch in load_w}
        self.energy_wh: dict[int, float] = {ch: 0.0 for ch in load_w}
        self.fault: Fault = None
        self.requests: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._cleared = asyncio.Event()
        self.hanging = asyncio.Event()  # set while a request hangs, for tests to wait on

    def power_w(self, ch: int) -> float:
        forced = self.drawing[ch]
        if forced is not None:
            return forced
        return self.load_w[ch] if self.on[ch] else 0.0

    def set_fault(self, fault: Fault) -> None:
        self.fault = fault
        if fault is None:
            self._cleared.set()
            self._cleared = asyncio.Event()
            self.hanging.clear()

    async def _faulted(self) -> web.Response | None:
        if self.fault == "http500":
            return web.Response(status=500, text="internal error")
        if self.fault == "hang":
            self.hanging.set()
            await self._cleared.wait()
        return None

    def _routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        app.add_routes(self._routes())
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self.set_fault(None)
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> _RelaySim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class ShellySim(_RelaySim):
    """A Shelly Plus/Pro switch with channels 0.. (ids as in its RPC)."""

    def __init__(self, load_w: dict[int, float] | None = None) -> None:
        super().__init__(load_w or {0: 2000.0})

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/rpc/Switch.GetStatus", self._get_status),
            web.get("/rpc/Switch.Set", self._set),
        ]

    def _channel(self, request: web.Request) -> int | None:
        try:
            ch = int(request.query.get("id", "0"))
        except ValueError:
            return None
        return ch if ch in self.on else None

    async def _get_status(self, request: web.Request) -> web.Response:
        self.requests.append(str(request.rel_url))
        if (resp := await self._faulted()) is not None:
            return resp
        ch = self._channel(request)
        if ch is None:
            return web.json_response({"code": -105, "message": "no such id"}, status=404)
        return web.json_response(
            {
                "id": ch,
                "source": "http",
                "output": self.on[ch],
                "apower": self.power_w(ch),
                "voltage": 230.1,
                "aenergy": {"total": round(self.energy_wh[ch], 3), "by_minute": [0, 0, 0]},
                "temperature": {"tC": 41.2, "tF": 106.2},
            }
        )

    async def _set(self, request: web.Request) -> web.Response:
        self.requests.append(str(request.rel_url))
        if (resp := await self._faulted()) is not None:
            return resp
        ch = self._channel(request)
        on = request.query.get("on")
        if ch is None or on not in ("true", "false"):
            return web.json_response({"code": -103, "message": "bad argument"}, status=400)
        was = self.on[ch]
        self.on[ch] = on == "true"
        return web.json_response({"was_on": was})


class TasmotaSim(_RelaySim):
    """A Tasmota device with relays 1.. and one energy meter per relay."""

    def __init__(
        self,
        load_w: dict[int, float] | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        super().__init__(load_w or {1: 2000.0})
        self.user, self.password = user, password

    def _routes(self) -> list[web.RouteDef]:
        return [web.get("/cm", self._cm)]

    async def _cm(self, request: web.Request) -> web.Response:
        self.requests.append(str(request.rel_url))
        if (resp := await self._faulted()) is not None:
            return resp
        if self.password is not None and (
            request.query.get("user") != self.user or request.query.get("password") != self.password
        ):
            return web.json_response(
                {"WARNING": "Need user=<username>&password=<password>"}, status=401
            )
        words = request.query.get("cmnd", "").split()
        name = words[0].lower() if words else ""
        if name == "status" and words[1:] == ["8"]:
            chans = sorted(self.on)
            power = [self.power_w(c) for c in chans]
            total = [round(self.energy_wh[c] / 1000.0, 3) for c in chans]
            one = len(chans) == 1
            return web.json_response(
                {
                    "StatusSNS": {
                        "Time": "2026-12-07T12:00:00",
                        "ENERGY": {
                            "Total": total[0] if one else total,
                            "Power": power[0] if one else power,
                            "Voltage": 230,
                        },
                    }
                }
            )
        if name.startswith("power"):
            ch = int(name.removeprefix("power") or "1")
            if ch not in self.on:
                return web.json_response({"Command": "Unknown"})
            if words[1:]:
                arg = words[1].lower()
                if arg not in ("on", "off", "1", "0"):
                    return web.json_response({"Command": "Error"})
                self.on[ch] = arg in ("on", "1")
            key = f"POWER{ch}" if len(self.on) > 1 else "POWER"
            return web.json_response({key: "ON" if self.on[ch] else "OFF"})
        return web.json_response({"Command": "Unknown"})
