"""What loading the config and building the daemon import: a stage's heavy libraries only when
the stage needs them (the daemon's RSS on a Pi; README, Benchmarks)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO


def modules_after(script: str) -> set[str]:
    """Top-level and dotted module names loaded by `script` in a fresh interpreter."""
    code = textwrap.dedent(script) + "\nimport sys\nprint(' '.join(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(out.stdout.split())


def test_the_demo_config_and_the_daemon_load_no_crypto_holidays_or_unused_ocpp() -> None:
    # The demo config: every stage on but the uplink and flex; OCPP on, no charger connected.
    loaded = modules_after(
        f"""
        from hems.config import load_config
        load_config({str(REPO / "config" / "demo.yaml")!r})
        import hems.app.daemon
        import hems.devices.ocpp.server
        """
    )
    unwanted = {"cryptography", "holidays", "aiomqtt", "paho", "ocpp.v16", "ocpp.v201"}
    assert unwanted & loaded == set()
    assert "hems.uplink.config" in loaded and "hems.flex.config" in loaded


def test_the_uplink_package_still_exports_its_names() -> None:
    loaded = modules_after("from hems.uplink import Uplink, UplinkConfig, describe_site")
    assert "cryptography" in loaded  # Uplink signs with it: imported when asked for
