"""Named baseline methods: the published rules expressed as engine parameters.

Each preset cites its source. Where the source is silent or ambiguous the choice made here is
stated next to the parameter; `version` changes whenever a parameter does, and every report
carries it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hems.flex.baselines import AdjustmentRule, BaselineMethod, DayRule

# Elexon, Balancing and Settlement Code, Baselining Methodology Document v1.0 (BSC
# Modification P376, effective 23 Feb 2023), methodology BL01:
# - Working day: mean of the 10 most recent working days; non-working day (weekend or bank
#   holiday): the 4 most recent non-working days; both within the 60 days before the event
#   day, leaving out event days and days without complete data.
# - In-day adjustment: additive, the mean difference between metered and unadjusted
#   baseline over the 3 h window ending 1 h before the first event period, applied to every
#   event period; it may be positive or negative.
# Our choice: fewer eligible days than 10 / 4 -> no baseline (NaN) rather than a mean of
# fewer days, so a report is never built on thinner history than the method names.
ELEXON_BL01 = BaselineMethod(
    name="elexon-bl01",
    version="bl01-p376-v1/hems-1",
    reference="Elexon BSC Baselining Methodology Document v1.0 (P376), BL01",
    lookback_days=60,
    working=DayRule(count=10, pool=10, pick="most_recent"),
    non_working=DayRule(count=4, pool=4, pick="most_recent"),
    adjustment=AdjustmentRule(kind="additive", window_start_h=4.0, window_end_h=1.0),
    settlement="net",
)

# National Grid ESO (now NESO), Demand Flexibility Service (DFS): the baseline is the BL01 day
# selection (the 10 most recent working days, event days left out, 60-day lookback). In
# 2022/23 an in-day adjustment from the 3 h before the event was applied; it was gamed by
# raising consumption in that window ("power rinse", Utility Week, June 2023) and ESO
# proposed removing it for 2023/24. So here it is off by default and can be switched on
# (BL01 window: 3 h ending 1 h before the event). Settlement counts only turn-down per
# period ("positive_only", opt-in) or nets the periods ("net").
DFS = dataclasses.replace(
    ELEXON_BL01,
    name="dfs",
    version="dfs-bl01/hems-1",
    reference="NESO Demand Flexibility Service baseline (BL01 day selection; in-day "
    "adjustment optional)",
    adjustment=dataclasses.replace(ELEXON_BL01.adjustment, kind="none"),
    settlement="positive_only",
)

# PJM Manual 11 (Energy & Ancillary Services Market Operations) §10, Customer Baseline Load
# for Economic Load Response, default CBL "High 4 of 5":
# - weekday: the 5 most recent eligible weekdays within 45 calendar days (NERC holidays,
#   event days and low-usage days left out), of which the 4 with the highest average usage
#   over the event hours are averaged;
# - weekend / holiday: the highest 2 of the 3 most recent like days;
# - Symmetric Additive Adjustment (SAA): the mean difference between metered load and CBL
#   over the 3 hours ending 1 hour before the event, added to every event hour; up or down.
# Our choices: holidays come from the site's calendar (flex.calendar): for a US site the
# NERC holidays by default (holiday_set auto), elsewhere the country's public holidays; the
# low-usage test compares each day's mean over the event window with 25 % of the pool's
# mean, once the pool is full, and replaces low days with older ones; half-hourly periods
# are used as delivered by the smart meter (PJM settles hourly).
PJM_HIGH_4_OF_5 = BaselineMethod(
    name="pjm-high-4-of-5",
    version="pjm-m11-cbl-high4of5-saa/hems-1",
    reference="PJM Manual 11 §10, Economic Load Response CBL High 4 of 5 with SAA",
    lookback_days=45,
    working=DayRule(count=4, pool=5, pick="highest", low_usage_fraction=0.25),
    non_working=DayRule(count=2, pool=3, pick="highest", low_usage_fraction=0.25),
    adjustment=AdjustmentRule(kind="additive", window_start_h=4.0, window_end_h=1.0),
    settlement="net",
)

# CAISO Business Practice Manual for Metering, Performance Evaluation Methodology, Customer
# Load Baseline "10-in-10": the 10 most recent similar non-event days (weekdays) within 45
# days, or the 4 most recent for weekends/holidays; a multiplicative day-of adjustment from
# the hours before the event, limited to ±20 %.
# Our choices: the adjustment window is the 3 h ending 1 h before the event (as for the
# other presets); "holidays" are the NERC holidays for a US site (flex.calendar holiday_set
# auto; set it to public for the federal ones); at least 5 (weekday) / 2 (weekend) eligible
# days are needed.
CAISO_10_OF_10 = BaselineMethod(
    name="caiso-10-of-10",
    version="caiso-bpm-metering-10in10/hems-1",
    reference="CAISO BPM for Metering, Customer Load Baseline 10-in-10 with day-of adjustment",
    lookback_days=45,
    working=DayRule(count=10, pool=10, pick="most_recent", min_days=5),
    non_working=DayRule(count=4, pool=4, pick="most_recent", min_days=2),
    adjustment=AdjustmentRule(
        kind="multiplicative", window_start_h=4.0, window_end_h=1.0, cap_fraction=0.2
    ),
    settlement="net",
)

PRESETS: dict[str, BaselineMethod] = {
    m.name: m for m in (ELEXON_BL01, DFS, PJM_HIGH_4_OF_5, CAISO_10_OF_10)
}


def method(
    name: str, *, adjustment: bool | None = None, settlement: str | None = None, **overrides: Any
) -> BaselineMethod:
    """The preset `name`, optionally with the in-day adjustment switched off
    (`adjustment=False` -> kind "none") or on (`adjustment=True`: a preset without one gets
    BL01's additive adjustment), or another settlement ("positive_only" / "net").

    Any change from the preset is recorded in the version string, e.g. "+no-adjustment".
    """
    try:
        m = PRESETS[name]
    except KeyError:
        raise ValueError(f"method: unknown {name!r}, one of {', '.join(sorted(PRESETS))}") from None
    suffix = ""
    if adjustment is False and m.adjustment.kind != "none":
        m = dataclasses.replace(m, adjustment=dataclasses.replace(m.adjustment, kind="none"))
        suffix += "+no-adjustment"
    elif adjustment is True and m.adjustment.kind == "none":
        m = dataclasses.replace(m, adjustment=dataclasses.replace(m.adjustment, kind="additive"))
        suffix += "+adjustment"
    if settlement is not None and settlement != m.settlement:
        if settlement not in ("positive_only", "net"):
            raise ValueError(f"settlement: must be positive_only or net, got {settlement!r}")
        m = dataclasses.replace(m, settlement=settlement)  # type: ignore[arg-type]
        suffix += f"+{settlement}"
    if overrides:
        m = dataclasses.replace(m, **overrides)
        suffix += "+" + ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return dataclasses.replace(m, version=m.version + suffix) if suffix else m
