"""Config of the OCPP central system (the gateway is the CSMS for the home's chargers).

```yaml
devices:
  - type: ocpp                        # one entry per charger, beside the other devices
    id: garage
    password: ${cred:ocpp-garage}     # security profile 1 (or 2 with tls)
    quirks: generic-1.6
    phases: 3
    ev: {default_departure: "07:00", target_energy_wh: 20000}
ocpp:
  enabled: true
  port: 9000
```

The `ocpp:` section holds the central system's policy; the composition root hands it the
charger entries with `OcppConfig.with_chargers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from hems.core.assets import ControlOptions, EvNeeds
from hems.core.configbase import DeviceId, Port, Strict
from hems.core.readings import Role


class OcppTlsConfig(Strict):
    """Security profile 2: TLS on the websocket, with HTTP Basic auth inside it."""

    cert_path: Path
    key_path: Path


class ChargerConfig(Strict):
    """A `devices[]` entry of `type: ocpp`: one EV charger connecting to our central system."""

    type: Literal["ocpp"] = "ocpp"
    id: DeviceId  # the hems device id
    # The charge point identity: the last segment of ws://gateway:9000/<identity> and the
    # basic-auth user name. Defaults to `id`. OCPP 2.0.1 identifierString characters.
    identity: str | None = Field(default=None, pattern=r"^[A-Za-z0-9*+=:;,._@|-]{1,48}$")
    # Basic-auth password (1.6 AuthorizationKey / 2.0.1 BasicAuthPassword). Without one the
    # charger is accepted on its id alone (security profile 0): only on a trusted network.
    password: SecretStr | None = None
    quirks: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        description="drivers/chargers/<name>.yaml; default generic-<ocpp version>",
    )
    connector_id: int = Field(default=1, ge=1, le=16, description="connector / EVSE id")
    phases: Literal[1, 3] = 3
    min_current_a: float = Field(default=6.0, ge=6.0, le=80.0, description="IEC 61851 min")
    max_current_a: float = Field(default=32.0, ge=6.0, le=80.0)
    voltage_v: float = Field(default=230.0, gt=0, le=500, description="for A<->W")
    phase_switch_cooldown_s: float = Field(default=300.0, ge=0, le=3600)
    safe_state: Literal["pause", "minimum"] = "pause"
    # GB Smart Charge Points Regulations 2021: the charger delays starts and rate changes by
    # up to this [s] unless the change is DSR. None: take it from the quirk profile.
    randomised_delay_max_s: float | None = Field(default=None, ge=0, le=1800)
    # Tolerance when checking that the measured current followed the limit [A].
    follow_tolerance_a: float = Field(default=1.5, ge=0, le=10)
    ev: EvNeeds | None = Field(default=None, description="what the owner wants; None: not planned")
    control: ControlOptions | None = None

    @property
    def role(self) -> Role:
        return Role.EV

    @property
    def cp_identity(self) -> str:
        return self.identity or self.id

    @field_validator("quirks")
    @classmethod
    def _known_profile(cls, value: str | None) -> str | None:
        if value is not None:
            from hems.devices.ocpp.quirks import load_profile
            from hems.errors import ConfigError

            try:
                load_profile(value)  # also validates the file itself
            except ConfigError as exc:
                raise ValueError(exc.problem if exc.field == "quirks" else str(exc)) from None
        return value

    @field_validator("password")
    @classmethod
    def _password_length(cls, value: SecretStr | None) -> SecretStr | None:
        # 1.6 security whitepaper: 16..20 bytes (<= 40 hex digits); 2.0.1: 16..40 characters.
        if value is not None and not 16 <= len(value.get_secret_value()) <= 40:
            raise ValueError("must be 16..40 characters (OCPP security profile 1)")
        return value

    @model_validator(mode="after")
    def _current_range(self) -> ChargerConfig:
        if self.max_current_a < self.min_current_a:
            raise ValueError("max_current_a must be >= min_current_a")
        return self


class OcppConfig(Strict):
    enabled: bool = False
    host: str = "0.0.0.0"
    port: Port = 9000
    tls: OcppTlsConfig | None = None
    ping_interval_s: float | None = Field(
        default=20.0, gt=0, le=3600, description="websocket ping; null for chargers that choke"
    )
    ping_timeout_s: float = Field(default=20.0, gt=0, le=3600)
    response_timeout_s: float = Field(default=15.0, gt=0, le=300)
    heartbeat_interval_s: int = Field(default=300, ge=10, le=86400)
    # Every charging profile hems sends carries validTo = now + this (1.6J and 2.0.1; the
    # charger's clock is set from our BootNotification/Heartbeat answers). The control loop
    # re-sends it every control.refresh_s, which must stay well below this (checked in
    # hems.config). If hems stops, the profile expires and the charger falls back to its own
    # default (its configured or installer limit, often its full rating) after at most this
    # long. Chargers limited by a configuration key or a DataTransfer (quirk fallback) and
    # chargers that refuse validTo keep hems' last value until it is changed.
    profile_validity_s: float = Field(default=300.0, ge=60, le=86400)
    # Every configured charger needs a password (security profile 1, or 2 with tls) unless
    # this is set: then anyone on the LAN using a charger's identity can take its place.
    # For a test bench only; logged as insecure at start.
    allow_insecure_chargers: bool = False
    # Unknown ids are held as pending (BootNotification answered Pending) for the owner to
    # accept, instead of being refused with HTTP 404.
    allow_pending_unknown: bool = False
    meter_value_sample_interval_s: int = Field(default=10, ge=1, le=3600)
    # A charger that connects more often than this within reconnect_window_s is refused
    # (HTTP 429) and shown faulted until the window passes.
    max_connects_per_window: int = Field(default=10, ge=2, le=1000)
    reconnect_window_s: float = Field(default=60.0, gt=0, le=3600)
    # Handshakes from one remote address within reconnect_window_s, whatever identity or
    # password they carry; more get HTTP 429 without touching any charger's state.
    max_handshakes_per_address: int = Field(default=60, ge=2, le=10000)
    # Unknown ids held as pending at once (allow_pending_unknown); one not seen for
    # pending_unknown_expiry_s is forgotten (its row in the database stays for the owner).
    max_pending_unknown: int = Field(default=20, ge=1, le=1000)
    pending_unknown_expiry_s: float = Field(default=3600.0, gt=0, le=86400 * 7)
    # Largest websocket message accepted from a charger; a bigger one closes the connection
    # (1009). OCPP frames from a charger are a few kB; MeterValues batches stay well below.
    max_frame_bytes: int = Field(default=256 * 1024, ge=4096, le=16 * 1024 * 1024)
    # Local authorisation list for Authorize / StartTransaction (id tags / idTokens).
    # Empty: every tag is accepted (plug and charge at home).
    id_tags: list[str] = Field(default_factory=list)

    # The configured chargers: the `type: ocpp` entries of `devices[]`.
    _chargers: tuple[ChargerConfig, ...] = PrivateAttr(default=())

    def with_chargers(self, chargers: Sequence[ChargerConfig]) -> OcppConfig:
        """This policy serving these chargers (a copy). Raises ValueError naming the charger
        for a repeated identity or, unless insecure chargers are allowed, a missing password."""
        seen: set[str] = set()
        for charger in chargers:
            for key in {charger.id, charger.cp_identity}:
                if key in seen:
                    raise ValueError(f"charger id/identity {key!r} is used twice")
                seen.add(key)
            if self.enabled and not self.allow_insecure_chargers and charger.password is None:
                raise ValueError(
                    f"password: required for charger {charger.id!r} (security profile 1/2); "
                    "set ocpp.allow_insecure_chargers: true only for a test bench"
                )
        copy = self.model_copy()
        copy._chargers = tuple(chargers)
        return copy

    @property
    def chargers(self) -> tuple[ChargerConfig, ...]:
        return self._chargers

    def charger(self, identity: str) -> ChargerConfig | None:
        """The configured charger whose charge point identity is `identity`."""
        return next((c for c in self.chargers if c.cp_identity == identity), None)
