"""Lifecycle shared by the HIL's pymodbus servers (the SunSpec home, any device profile)."""

from __future__ import annotations

import contextlib
from typing import Self

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimDevice


class SimTcpServer:
    """Serves `_devices()` on Modbus TCP: `await start()` binds (port 0 picks a free port; read
    `.port`), `await stop()`. Also an async context manager."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self._want_port = port
        self.port: int | None = None
        self._server: ModbusTcpServer | None = None

    def _devices(self) -> list[SimDevice]:
        raise NotImplementedError

    async def start(self) -> None:
        self._server = ModbusTcpServer(self._devices(), address=(self.host, self._want_port))
        await self._server.serve_forever(background=True)
        sockets = self._server.transport.sockets  # type: ignore[attr-defined]
        self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.shutdown()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
