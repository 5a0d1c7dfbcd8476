"""Home Assistant's broker credentials: refused config without them when controls are on, a
real Mosquitto with a password file that lets the right password in and keeps the wrong one
out, and the password never in the log either way."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
import structlog
from pydantic import ValidationError

from hems.core.clock import RealClock
from hems.core.state import SiteState
from hems.uplink.config import HomeAssistantConfig, HomeAssistantTlsConfig
from hems.uplink.homeassistant import HomeAssistantDiscovery
from hil.aggregator import find_mosquitto
from tests.testlib import free_port, running, wait_until

PASSWORD = "correct-broker-password-42"


def test_controls_need_an_authenticated_broker(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="controls: needs username and password"):
        HomeAssistantConfig(enabled=True, controls=True)
    with pytest.raises(ValidationError, match="controls: needs"):
        HomeAssistantConfig(enabled=True, controls=True, username="hems")  # no password
    HomeAssistantConfig(enabled=True, controls=True, username="hems", password=PASSWORD)
    cert = HomeAssistantTlsConfig(cert_path=tmp_path / "c.pem", key_path=tmp_path / "k.pem")
    HomeAssistantConfig(enabled=True, controls=True, tls=cert)
    with pytest.raises(ValidationError, match="cert_path and key_path go together"):
        HomeAssistantTlsConfig(cert_path=tmp_path / "c.pem")
    assert PASSWORD not in repr(HomeAssistantConfig(username="hems", password=PASSWORD))


def _prepare(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir / "passwords"


def _conf(workdir: Path, port: int, passwords: Path) -> Path:
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\npersistence false\nallow_anonymous false\n"
        f"password_file {passwords}\nuser {pwd.getpwuid(os.getuid()).pw_name}\n"
    )
    return conf


@contextlib.asynccontextmanager
async def password_broker(workdir: Path) -> AsyncIterator[int]:
    """Mosquitto that admits only `hems` / PASSWORD and `ha` / PASSWORD."""
    binary, passwd = find_mosquitto(), shutil.which("mosquitto_passwd")
    if binary is None or passwd is None:
        pytest.fail("mosquitto and mosquitto_passwd are required (apt-get install mosquitto)")
    passwords = _prepare(workdir)
    for i, user in enumerate(("hems", "ha")):
        flags = ["-c"] if i == 0 else []
        proc = await asyncio.create_subprocess_exec(
            passwd, *flags, "-b", str(passwords), user, PASSWORD
        )
        assert await proc.wait() == 0
    port = free_port()
    conf = _conf(workdir, port, passwords)
    with (workdir / "mosquitto.log").open("ab") as out:
        proc = await asyncio.create_subprocess_exec(binary, "-c", str(conf), stdout=out,
                                                    stderr=out)  # fmt: skip
    try:

        async def listening() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            return True

        await wait_until(listening, 10, "mosquitto listening")
        yield port
    finally:
        proc.terminate()
        await proc.wait()


async def test_the_right_password_gets_in_the_wrong_one_does_not(tmp_path: Path) -> None:
    clock = RealClock()
    async with password_broker(tmp_path / "mqtt") as port:
        good = HomeAssistantConfig(enabled=True, broker_host="127.0.0.1", broker_port=port,
                                   username="hems", password=PASSWORD)  # fmt: skip
        bad = HomeAssistantConfig(enabled=True, broker_host="127.0.0.1", broker_port=port,
                                  username="hems", password="wrong-" + PASSWORD)  # fmt: skip
        with structlog.testing.capture_logs() as logs:
            refused = HomeAssistantDiscovery(bad, "s2", SiteState(clock), clock)
            async with running(refused):
                await wait_until(
                    lambda: any(e["event"] == "home assistant broker unreachable" for e in logs),
                    10,
                    "the broker refuses the wrong password",
                )
            assert refused.announced == 0
            bridge = HomeAssistantDiscovery(good, "s1", SiteState(clock), clock)
            async with running(bridge):
                await wait_until(lambda: bridge.announced == 1, 10, "connected with the password")
                async with aiomqtt.Client("127.0.0.1", port, username="ha",
                                          password=PASSWORD) as ha:  # fmt: skip
                    await ha.subscribe("hems/s1/ha/availability")
                    async with asyncio.timeout(10):
                        message = await anext(aiter(ha.messages))
                    assert message.payload == b"online"
        assert PASSWORD not in repr(logs)  # neither the right nor the wrong one
