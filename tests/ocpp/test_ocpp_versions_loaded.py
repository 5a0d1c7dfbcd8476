"""A version's modules (ours and the ocpp package's) are loaded when a charger first speaks it:
a site with one 1.6 charger never loads 2.0.1 (3 MiB of the daemon's RSS)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from ocpp_helpers import PASSWORD

# A fresh interpreter without ocpp_helpers: the simulator there imports both versions.
SCRIPT = textwrap.dedent(
    """
    import asyncio, base64, json, os, sys
    from websockets.asyncio.client import connect
    from hems.core.clock import RealClock
    from hems.core.state import SiteState
    from hems.devices.ocpp.config import ChargerConfig, OcppConfig
    from hems.devices.ocpp.server import OcppCentralSystem

    def versions():
        return [v for v in ("ocpp.v16", "ocpp.v201") if v in sys.modules]

    async def main(password):
        cfg = OcppConfig.model_validate({"enabled": True, "host": "127.0.0.1"})
        cfg = cfg.model_copy(update={"port": 0}).with_chargers(
            [ChargerConfig.model_validate({"id": "cp1", "identity": "CP1", "password": password})]
        )
        clock = RealClock()
        cs = OcppCentralSystem(cfg, SiteState(clock), clock, None)
        task = asyncio.create_task(cs.run())  # referenced: not collected
        await asyncio.wait_for(cs.started.wait(), 10)
        print("started", versions())
        auth = base64.b64encode(f"CP1:{password}".encode()).decode()
        async with connect(f"ws://127.0.0.1:{cs.port}/CP1", subprotocols=["ocpp1.6"],
                           additional_headers={"Authorization": "Basic " + auth}) as ws:
            boot = {"chargePointVendor": "V", "chargePointModel": "M"}
            await ws.send(json.dumps([2, "b1", "BootNotification", boot]))
            while (frame := json.loads(await ws.recv()))[:2] != [3, "b1"]:
                pass  # the central system's own calls after the boot
            print("answered", frame[2]["status"], versions(), flush=True)
        os._exit(0)  # what is measured is done; the server's shutdown is tested elsewhere

    asyncio.run(main(sys.argv[1]))
    """
)


def test_a_16_charger_loads_16_only() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, PASSWORD], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith(("started", "answered"))]
    assert lines == ["started []", "answered Accepted ['ocpp.v16']"]
