"""Config bounds, `hems keys show` and `hems schema uplink`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.cli import main
from hems.config import ConfigErrors, validate
from hems.uplink.envelope import public_key_text
from hems.uplink.keys import load_or_create_key

AGG = public_key_text(Ed25519PrivateKey.generate().public_key())


def problems(uplink: dict) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        validate({"site": {"id": "s"}, "uplink": uplink})
    return info.value.problems


def test_config_errors_name_the_field() -> None:
    assert problems({"telemetry_interval_s": 5}) == ["uplink.telemetry_interval_s: must be 10..60"]
    assert problems({"clock_skew_max_s": 300})[0].startswith("uplink.clock_skew_max_s: must be")
    assert problems({"broker_port": 0}) == ["uplink.broker_port: must be 1..65535"]
    assert "aggregator_public_key" in problems({"enabled": True})[0]
    assert "32 bytes" in problems({"aggregator_public_key": "abcd"})[0]
    assert "{site_id}" in problems({"topic_prefix": "hems/"})[0]
    assert problems({"tls": {"ca_path": "/x"}})[0].startswith("uplink.tls.cert_path: is required")
    cfg = validate({"site": {"id": "s"}, "uplink": {"enabled": True, "aggregator_public_key": AGG}})
    assert cfg.uplink.prefix("s") == "hems/v1/s/"
    assert cfg.uplink.client_identifier("s") == "hems-s"
    assert cfg.uplink.key_path(Path("/data/hems.db")) == Path("/data/gateway_ed25519.pem")
    # Live telemetry no longer waits for the store's batch: a lifetime shorter than a batch
    # is allowed (only telemetry kept through an outage can expire unsent, by design).
    uplink = {"enabled": True, "aggregator_public_key": AGG, "message_ttl_s": 120}
    cfg = validate({"site": {"id": "s"}, "storage": {"batch_interval_s": 300}, "uplink": uplink})
    assert cfg.uplink.message_ttl_s == 120 and cfg.storage.batch_interval_s == 300


def test_keys_show_generates_once_and_prints_the_same_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "hems.yaml"
    conf.write_text(f"site: {{id: s}}\nstorage: {{path: {tmp_path / 'data' / 'hems.db'}}}\n")
    assert main(["keys", "show", "-c", str(conf)]) == 0
    first = capsys.readouterr().out.strip()
    key_file = tmp_path / "data" / "gateway_ed25519.pem"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert main(["keys", "show", "-c", str(conf)]) == 0
    assert capsys.readouterr().out.strip() == first
    assert public_key_text(load_or_create_key(key_file).public_key()) == first
    key_file.write_text("garbage")
    assert main(["keys", "show", "-c", str(conf)]) == 1
    assert "not a PEM key" in capsys.readouterr().err


def test_schema_command_prints_the_uplink_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "uplink"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["types"]["event"]["topic"] == "hems/v1/{site_id}/down/event"
