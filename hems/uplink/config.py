"""Config of the aggregator channel (section `uplink:`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from hems.core.configbase import Port, Strict


class UplinkTlsConfig(Strict):
    """TLS with a client certificate per gateway. Leave `uplink.tls` out for plain TCP."""

    ca_path: Path = Field(description="CA bundle that signed the broker's certificate (PEM)")
    cert_path: Path = Field(description="this gateway's client certificate (PEM)")
    key_path: Path = Field(description="this gateway's client key (PEM)")
    insecure_skip_hostname_check: bool = False


class HomeAssistantTlsConfig(Strict):
    """TLS to the local broker. Leave `home_assistant.tls` out for plain TCP."""

    ca_path: Path | None = Field(
        default=None,
        description="CA bundle that signed the broker's certificate; default: the system's",
    )
    cert_path: Path | None = Field(
        default=None, description="client certificate (PEM), if the broker asks"
    )
    key_path: Path | None = Field(default=None, description="client key (PEM), with cert_path")
    insecure_skip_hostname_check: bool = False

    @model_validator(mode="after")
    def _pair(self) -> HomeAssistantTlsConfig:
        if (self.cert_path is None) != (self.key_path is None):
            raise ValueError("cert_path: cert_path and key_path go together")
        return self


class HomeAssistantConfig(Strict):
    """Optional Home Assistant on a local broker: MQTT discovery of the site figures, and
    with `controls` the owner's controls as HA entities."""

    enabled: bool = False
    broker_host: str = "localhost"
    broker_port: Port = 1883
    username: str | None = None
    password: SecretStr | None = None
    tls: HomeAssistantTlsConfig | None = None
    discovery_prefix: str = Field(default="homeassistant", pattern=r"^[A-Za-z0-9_/-]{1,64}$")
    state_interval_s: float = Field(default=10.0, ge=1, le=600)
    controls: bool = Field(
        default=False,
        description="EV modes and targets, battery mode overrides and flexibility opt-out "
        "as HA entities; needs username and password or a TLS client certificate",
    )

    @model_validator(mode="after")
    def _authenticated(self) -> HomeAssistantConfig:
        # Whoever may publish on the broker may change what the devices do: never anonymous.
        has_password = self.username is not None and self.password is not None
        has_cert = self.tls is not None and self.tls.cert_path is not None
        if self.controls and not (has_password or has_cert):
            raise ValueError(
                "controls: needs username and password or tls.cert_path (an authenticated broker)"
            )
        return self


class UplinkConfig(Strict):
    enabled: bool = False
    broker_host: str = "localhost"
    broker_port: Port = 8883
    tls: UplinkTlsConfig | None = None
    client_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="fixed MQTT client id (persistent session); default hems-{site_id}",
    )
    topic_prefix: str = Field(
        default="hems/v1/{site_id}/",
        description="every topic starts with this; {site_id} is replaced",
    )
    keepalive_s: int = Field(default=60, ge=5, le=3600)
    session_expiry_s: int = Field(default=7 * 86400, ge=0, le=4294967295)
    telemetry_interval_s: float = Field(default=30.0, ge=10, le=60)
    aggregator_public_key: str | None = Field(
        default=None,
        description="Ed25519 public key of the aggregator: base64url (32 bytes) or PEM",
    )
    gateway_key_path: Path | None = Field(
        default=None,
        description="this gateway's Ed25519 private key; generated on first use; "
        "default gateway_ed25519.pem next to storage.path",
    )
    outbox_max_rows: int = Field(default=50_000, ge=10, le=10_000_000)
    message_ttl_s: float = Field(
        default=30 * 86400,
        ge=60,
        le=365 * 86400,
        description="expires_at of outgoing messages: a row still in the outbox after an "
        "outage longer than this is not sent",
    )
    resend_after_s: float = Field(default=60.0, ge=1, le=3600)
    backoff_min_s: float = Field(default=1.0, ge=0.05, le=60)
    backoff_max_s: float = Field(default=300.0, ge=0.1, le=3600)
    connect_timeout_s: float = Field(default=10.0, ge=1, le=120)
    clock_skew_max_s: float = Field(default=120.0, ge=1, le=120)
    home_assistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        if "{site_id}" not in value or not value.endswith("/"):
            raise ValueError("must contain {site_id} and end with '/'")
        if any(c in value for c in "#+"):
            raise ValueError("must not contain MQTT wildcards")
        return value

    @field_validator("aggregator_public_key")
    @classmethod
    def _key_parses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from hems.uplink.envelope import load_public_key

        load_public_key(value)  # raises ValueError with the reason
        return value

    @model_validator(mode="after")
    def _consistent(self) -> UplinkConfig:
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s: must be >= backoff_min_s")
        if self.enabled and self.aggregator_public_key is None:
            raise ValueError("aggregator_public_key: is required when uplink is enabled")
        return self

    def prefix(self, site_id: str) -> str:
        return self.topic_prefix.replace("{site_id}", site_id)

    def client_identifier(self, site_id: str) -> str:
        return self.client_id or f"hems-{site_id}"

    def key_path(self, storage_path: Path | None) -> Path:
        """Where the gateway key lives: configured, else next to the database file."""
        if self.gateway_key_path is not None:
            return self.gateway_key_path
        base = storage_path.parent if storage_path is not None else Path("/var/lib/hems")
        return base / "gateway_ed25519.pem"
