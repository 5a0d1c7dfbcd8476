"""Config of the tariff (`planner.tariff`): the kind, its provider's section, fixed export and
the optional carbon weight. Re-exported by `hems.planning.config`."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from apscheduler.triggers.cron import CronTrigger
from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from hems.core.assets import HhMm
from hems.core.configbase import Strict

TariffKind = Literal[
    "fixed",
    "tou",
    "octopus_agile",
    "octopus_go",
    "octopus_intelligent_go",
    "octopus_cosy",
    "octopus_flux",
    "octopus_tracker",
    "entsoe",
    "nordpool",
    "tibber",
]

# The import product each Octopus kind needs (its code starts with this).
OCTOPUS_PRODUCT_PREFIX = {
    "octopus_agile": "AGILE-",
    "octopus_go": "GO-",
    "octopus_intelligent_go": "INTELLI-",
    "octopus_cosy": "COSY-",
    "octopus_flux": "FLUX-IMPORT-",
    "octopus_tracker": "SILVER-",
}
FLUX_EXPORT_PREFIX = "FLUX-EXPORT-"


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _check_crons(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("needs at least one crontab")
    for i, tab in enumerate(value):
        try:
            CronTrigger.from_crontab(tab, timezone="UTC")
        except ValueError as exc:
            raise ValueError(
                f"[{i}] {tab!r} is not a crontab (minute hour day month weekday): {exc}"
            ) from None
    return value


Crontabs = Annotated[list[str], BeforeValidator(_as_list)]


class FetchConfig(Strict):
    """What every fetched source shares: where, how patiently, and when."""

    base_url: str = Field(default="", pattern=r"^https?://\S+$")
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    retries: int = Field(default=3, ge=0, le=10, description="retries per request")
    backoff_s: float = Field(default=2.0, ge=0, le=300, description="first retry wait, doubling")
    fetch_cron: Crontabs = Field(
        default_factory=lambda: ["5 * * * *"],
        description="crontabs (one string or a list) in the site's time zone: when to fetch",
    )
    retry_after_s: float = Field(
        default=300.0, ge=10, le=86400, description="after a failed fetch, try again this soon"
    )

    @field_validator("fetch_cron")
    @classmethod
    def _crons(cls, value: list[str]) -> list[str]:
        return _check_crons(value)


class OctopusConfig(FetchConfig):
    base_url: str = Field(default="https://api.octopus.energy", pattern=r"^https?://\S+$")
    product_code: str = Field(default="AGILE-24-10-01", pattern=r"^[A-Z0-9-]{3,64}$")
    tariff_code: str = Field(
        default="E-1R-AGILE-24-10-01-C",
        pattern=r"^E-[12]R-[A-Z0-9-]+-[A-P]$",
        description="E-1R-{product_code}-{region letter A..P}",
    )
    export_product_code: str | None = Field(default=None, pattern=r"^[A-Z0-9-]{3,64}$")
    export_tariff_code: str | None = Field(default=None, pattern=r"^E-[12]R-[A-Z0-9-]+-[A-P]$")
    fetch_cron: Crontabs = Field(
        default_factory=lambda: ["5 * * * *", "*/10 16-19 * * *"],
        description="crontabs in the site's time zone (Agile's next day appears ~16:00 UK)",
    )
    off_peak_start: HhMm = Field(
        default="23:30", description="Intelligent Go: off-peak start, UK local time HH:MM"
    )
    off_peak_end: HhMm = Field(default="05:30", description="Intelligent Go: off-peak end")

    @property
    def region(self) -> str:
        return self.tariff_code[-1]


class DayAheadConfig(FetchConfig):
    """A day-ahead market price and the formula to a retail price (fields, not code):
    import = (spot + grid_fee_per_kwh) × (1 + vat_fraction); export = spot − export_fee_per_kwh
    with `export: spot`."""

    grid_fee_per_kwh: float = Field(default=0.0, ge=-1, le=10, description="[currency/kWh]")
    vat_fraction: float = Field(default=0.0, ge=0, le=1, description="e.g. 0.21 for 21 %")
    export: Literal["fixed", "spot"] = "fixed"
    export_fee_per_kwh: float = Field(default=0.0, ge=-1, le=10, description="[currency/kWh]")
    fetch_cron: Crontabs = Field(
        default_factory=lambda: ["15 * * * *", "*/15 12-15 * * *"],
        description="crontabs in the site's time zone",
    )


class EntsoeConfig(DayAheadConfig):
    """ENTSO-E day-ahead prices (document A44, EUR/MWh) and the retail formula."""

    base_url: str = Field(default="https://web-api.tp.entsoe.eu", pattern=r"^https?://\S+$")
    security_token: SecretStr | None = Field(
        default=None, description="required for kind entsoe; use a secret reference"
    )
    bidding_zone: str = Field(
        default="10YNL----------L",
        pattern=r"^[0-9]{2}[A-Z][0-9A-Z-]{13}$",
        description="EIC code of the bidding zone (16 characters)",
    )


NORDPOOL_CURRENCIES = ("EUR", "DKK", "NOK", "SEK", "PLN")


class NordpoolConfig(DayAheadConfig):
    """Nord Pool day-ahead prices (Data Portal, currency/MWh) and the retail formula."""

    base_url: str = Field(
        default="https://dataportal-api.nordpoolgroup.com/api", pattern=r"^https?://\S+$"
    )
    delivery_area: str = Field(
        default="SE3", pattern=r"^[A-Z][A-Z0-9-]{1,7}$", description="e.g. SE3, NO1, DK1, FI"
    )


class TibberConfig(FetchConfig):
    base_url: str = Field(
        default="https://api.tibber.com/v1-beta/gql",
        pattern=r"^https?://\S+$",
        description="the GraphQL endpoint",
    )
    token: SecretStr | None = Field(
        default=None, description="required for kind tibber; use a secret reference"
    )
    home_id: str | None = Field(
        default=None, pattern=r"^[0-9a-fA-F-]{8,64}$", description="the first home if unset"
    )
    fetch_cron: Crontabs = Field(
        default_factory=lambda: ["10 * * * *", "*/15 12-15 * * *"],
        description="crontabs in the site's time zone",
    )


class CarbonConfig(FetchConfig):
    """GB regional carbon intensity forecast as a weight: import + intensity × price_per_kg."""

    enabled: bool = False
    base_url: str = Field(default="https://api.carbonintensity.org.uk", pattern=r"^https?://\S+$")
    region_id: int = Field(default=13, ge=1, le=17, description="1..17; 13 = London")
    price_per_kg: float = Field(
        default=0.0, ge=0, le=10, description="carbon price [currency/kgCO2] added to import"
    )
    fetch_cron: Crontabs = Field(
        default_factory=lambda: ["20,50 * * * *"], description="crontabs in the site's time zone"
    )


class TouBand(Strict):
    """One time-of-use price band. `start`/`end` are local HH:MM; end <= start wraps midnight."""

    start: HhMm = Field(description="local time HH:MM")
    end: HhMm = Field(description="local time HH:MM; equal to start means all day")
    import_per_kwh: float = Field(ge=-10, le=10, description="price [currency/kWh]")
    export_per_kwh: float | None = Field(default=None, ge=-10, le=10)
    days: Literal["all", "weekday", "weekend"] = "all"
    months: list[int] = Field(
        default_factory=lambda: list(range(1, 13)), description="months 1..12 (seasons)"
    )

    @field_validator("months")
    @classmethod
    def _months(cls, value: list[int]) -> list[int]:
        if not value or any(m < 1 or m > 12 for m in value):
            raise ValueError("must list months 1..12")
        return value


class TariffConfig(Strict):
    kind: TariffKind = "fixed"
    currency: str = Field(default="GBP", pattern=r"^[A-Z]{3}$", description="ISO 4217 code")
    fixed_import_per_kwh: float = Field(default=0.25, ge=-10, le=10)
    fixed_export_per_kwh: float = Field(default=0.15, ge=-10, le=10)
    fixed_export_pence_per_kwh: float | None = Field(
        default=None,
        ge=-1000,
        le=1000,
        description="a fixed export tariff [1/100 currency/kWh], paired with any kind",
    )
    bands: list[TouBand] = Field(default_factory=list)
    octopus: OctopusConfig = Field(default_factory=OctopusConfig)
    entsoe: EntsoeConfig = Field(default_factory=EntsoeConfig)
    nordpool: NordpoolConfig = Field(default_factory=NordpoolConfig)
    tibber: TibberConfig = Field(default_factory=TibberConfig)
    carbon: CarbonConfig = Field(default_factory=CarbonConfig)
    fallback_import_per_kwh: float = Field(
        default=0.25, ge=-10, le=10, description="used where no price is known [currency/kWh]"
    )
    fallback_export_per_kwh: float = Field(default=0.0, ge=-10, le=10)
    standing_charge_per_day: float = Field(
        default=0.0, ge=0, le=100, description="shown to the user, not optimised"
    )

    @model_validator(mode="after")
    def _kind_needs(self) -> TariffConfig:
        if self.kind == "tou" and not self.bands:
            raise ValueError("bands: kind 'tou' needs at least one band")
        if self.kind in OCTOPUS_PRODUCT_PREFIX:
            _check_octopus(self.kind, self.octopus)
        if self.kind == "entsoe":
            if self.entsoe.security_token is None:
                raise ValueError("entsoe.security_token: kind 'entsoe' needs the token")
            if self.currency != "EUR":
                raise ValueError("currency: ENTSO-E prices are in EUR; set currency: EUR")
        if self.kind == "nordpool" and self.currency not in NORDPOOL_CURRENCIES:
            raise ValueError(
                f"currency: Nord Pool quotes {', '.join(NORDPOOL_CURRENCIES)}, not {self.currency}"
            )
        if self.kind == "tibber" and self.tibber.token is None:
            raise ValueError("tibber.token: kind 'tibber' needs the API token")
        if self.fixed_export_pence_per_kwh is not None and self.has_export_source:
            raise ValueError(
                "fixed_export_pence_per_kwh: the tariff already has an export price source"
            )
        return self

    @property
    def has_export_source(self) -> bool:
        """True when export prices are fetched (Octopus export codes, ENTSO-E at spot)."""
        if self.kind in OCTOPUS_PRODUCT_PREFIX:
            return self.octopus.export_tariff_code is not None
        if self.kind == "nordpool":
            return self.nordpool.export == "spot"
        return self.kind == "entsoe" and self.entsoe.export == "spot"

    @property
    def fixed_export_price_per_kwh(self) -> float:
        """The export price where no source gives one [currency/kWh]."""
        if self.fixed_export_pence_per_kwh is not None:
            return self.fixed_export_pence_per_kwh / 100.0
        return self.fixed_export_per_kwh


def _check_octopus(kind: str, o: OctopusConfig) -> None:
    prefix = OCTOPUS_PRODUCT_PREFIX[kind]
    if not o.product_code.startswith(prefix):
        raise ValueError(
            f"octopus.product_code: kind {kind!r} needs a product code starting {prefix!r}, "
            f"not {o.product_code!r}"
        )
    for code, product, field in (
        (o.tariff_code, o.product_code, "tariff_code"),
        (o.export_tariff_code, o.export_product_code, "export_tariff_code"),
    ):
        if code is not None and product is not None:
            if not re.fullmatch(rf"E-[12]R-{re.escape(product)}-[A-P]", code):
                raise ValueError(f"octopus.{field}: {code!r} is not E-1R-{product}-<region A..P>")
    if (o.export_product_code is None) != (o.export_tariff_code is None):
        raise ValueError("octopus.export_tariff_code: give both export codes or neither")
    if (
        kind == "octopus_flux"
        and o.export_product_code is not None
        and not o.export_product_code.startswith(FLUX_EXPORT_PREFIX)
    ):
        raise ValueError(
            f"octopus.export_product_code: Flux export needs a code starting {FLUX_EXPORT_PREFIX!r}"
        )
    if o.export_tariff_code is not None and o.export_tariff_code[-1] != o.region:
        raise ValueError("octopus.export_tariff_code: its region letter differs from tariff_code")
