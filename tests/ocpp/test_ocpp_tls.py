"""Security profile 2: TLS with basic auth inside it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ocpp_helpers import PASSWORD, central_system, ocpp_config, stop_task, wait_for

from hems.core.clock import RealClock
from hems.errors import ConfigError
from hil.chargepoint import SimChargePoint, SimConfig


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hems-gateway")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_profile_2(tmp_path: Path) -> None:
    import asyncio

    cert, key = _self_signed(tmp_path)
    cfg = ocpp_config(tls={"cert_path": str(cert), "key_path": str(key)})
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with central_system(cfg) as (cs, _state):
        sim = SimChargePoint(
            SimConfig(
                url=f"wss://127.0.0.1:{cs.port}",
                identity="CP1",
                password=PASSWORD,
                meter_interval_s=0.2,
                ssl_context=client_ctx,
            ),
            RealClock(),
        )
        task = asyncio.create_task(sim.run())
        try:
            await wait_for(lambda: cs.charger("cp1").booted, what="boot over TLS")
        finally:
            await sim.aclose()
            await stop_task(task)


async def test_tls_bad_certificate_path_is_a_config_error(tmp_path: Path) -> None:
    from hems.core.state import SiteState
    from hems.devices.ocpp.server import OcppCentralSystem

    cfg = ocpp_config(
        tls={"cert_path": str(tmp_path / "missing.pem"), "key_path": str(tmp_path / "missing.key")}
    )
    clock = RealClock()
    cs = OcppCentralSystem(cfg, SiteState(clock), clock)
    with pytest.raises(ConfigError, match=r"ocpp.tls: cannot load certificate/key"):
        await cs.run()
