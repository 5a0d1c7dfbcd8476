"""`handle_local_echo`: RS-485 adapters that echo what they send (RTU on a serial port only)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from modbus_sim import PtyPair
from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hems.config import ConfigErrors, load_config
from hems.devices.modbus.config import SunSpecDeviceConfig
from hems.devices.modbus.engine import EndpointPool, EndpointSpec
from hems.errors import ConfigError

CONFIG = """\
site:
  id: home
devices:
  - type: sunspec
    id: meter
    role: grid
    transport: {transport}
    {where}
    handle_local_echo: true
"""


@pytest.mark.parametrize(
    ("transport", "where"),
    [("tcp", "host: 10.0.0.6"), ("rtu-over-tcp", "host: 10.0.0.7")],
)
def test_modbus_local_echo_is_refused_off_a_serial_port(tmp_path: Path, transport, where) -> None:
    path = tmp_path / "hems.yaml"
    path.write_text(CONFIG.format(transport=transport, where=where))
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    assert info.value.problems == [
        f"devices[0].handle_local_echo: only for transport rtu (a serial port), not {transport}"
        " (line 9)"
    ]
    with pytest.raises(ConfigError, match="handle_local_echo: only for transport rtu"):
        EndpointSpec(transport=transport, host="h", handle_local_echo=True)  # type: ignore[arg-type]


def test_modbus_local_echo_reaches_the_rtu_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "hems.yaml"
    path.write_text(CONFIG.format(transport="rtu", where="serial_port: /dev/ttyUSB0"))
    dev = load_config(path).devices[0]
    assert isinstance(dev, SunSpecDeviceConfig)
    assert dev.endpoint_spec().handle_local_echo is True
    plain = SunSpecDeviceConfig(
        type="sunspec", id="m", role="grid", transport="rtu", serial_port="/dev/ttyUSB0"
    )
    assert plain.endpoint_spec().handle_local_echo is False


@pytest.fixture
async def echo_pair():
    pair = PtyPair(echo_b=True).start()
    yield pair.path_a, pair.path_b
    pair.close()


async def test_modbus_rtu_through_an_echoing_adapter(echo_pair, caplog):
    server_port, client_port = echo_pair
    dev = SimDevice(id=7, simdata=[SimData(0, values=[5, 6, 7, 8], datatype=DataType.REGISTERS)])
    server = ModbusSerialServer(dev, port=server_port, framer=FramerType.RTU, baudrate=19200)
    await server.serve_forever(background=True)
    spec = EndpointSpec(
        transport="rtu",
        serial_port=client_port,
        baudrate=19200,
        timeout_s=0.5,
        handle_local_echo=True,
    )
    try:
        ep = EndpointPool().get(spec)
        with caplog.at_level(logging.DEBUG, logger="pymodbus"):
            assert await ep.read(7, "holding", 0, 4) == [5, 6, 7, 8]
            await ep.write(7, 2, [70, 80])
            assert await ep.read(7, "holding", 0, 4) == [5, 6, 70, 80]
        # The echo of each request was recognised and dropped, not parsed as an answer.
        skipped = [r for r in caplog.records if "recv skipping (local_echo)" in r.getMessage()]
        assert len(skipped) >= 3
        await ep.close()
    finally:
        await server.shutdown()
