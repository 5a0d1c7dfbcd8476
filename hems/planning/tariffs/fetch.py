"""What every fetched price source shares: the error types, one HTTP request with retries,
reply-time checks, and the fetch schedule (APScheduler's cron triggers on the injected
clock's time)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from hems.core.clock import Clock
from hems.planning.tariff_config import FetchConfig

FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)  # "due now" for a source never fetched


class FetchError(Exception):
    """A source could not be fetched or its reply was unusable; names the provider."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(f"{provider}: {reason}")
        self.provider = provider
        self.reason = reason


class ReplyError(FetchError):
    """A reply that is not the prices it should be: names the provider and the input."""

    def __init__(self, provider: str, field: str, problem: str) -> None:
        super().__init__(provider, f"{field}: {problem}")
        self.field = field


def parse_utc(provider: str, field: str, raw: object) -> datetime:
    """An ISO 8601 time with an explicit offset (`Z` or ±HH:MM), as UTC.

    A time without an offset is refused: guessing its zone would shift every price.
    """
    if not isinstance(raw, str):
        raise ReplyError(provider, field, f"not a time string: {raw!r}")
    try:
        t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ReplyError(provider, field, f"not an ISO 8601 time: {raw!r}") from None
    if t.tzinfo is None or t.utcoffset() is None:
        raise ReplyError(provider, field, f"{raw!r} has no UTC offset (time zone unknown)")
    return t.astimezone(UTC)


async def request(
    http: httpx.AsyncClient,
    clock: Clock,
    cfg: FetchConfig,
    provider: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
) -> httpx.Response:
    """GET (or POST with `json_body`) with `cfg.retries` retries on connection errors, 429 and
    5xx, waiting `cfg.backoff_s` doubling on the injected clock. Errors never carry the URL,
    which may hold a token."""
    reason = "no attempt"
    for attempt in range(cfg.retries + 1):
        if attempt:
            await clock.sleep(cfg.backoff_s * 2 ** (attempt - 1))
        try:
            if json_body is None:
                r = await http.get(url, params=params, headers=headers, timeout=cfg.timeout_s)
            else:
                r = await http.post(url, json=json_body, headers=headers, timeout=cfg.timeout_s)
        except httpx.TransportError as exc:
            reason = type(exc).__name__  # its text may hold the URL
            continue
        except httpx.HTTPError as exc:  # e.g. a body that fails to decode: not worth a retry
            raise FetchError(provider, type(exc).__name__) from None
        if r.status_code == 429 or r.status_code >= 500:
            reason = f"HTTP {r.status_code}"
            continue
        if r.status_code >= 400:
            raise FetchError(provider, f"HTTP {r.status_code}")
        return r
    raise FetchError(provider, f"{reason} after {cfg.retries + 1} attempts")


def json_of(provider: str, r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        raise ReplyError(provider, "body", "not JSON (a truncated reply?)") from None


class FetchSchedule:
    """When a source fetches: its crontabs in the site's zone, and `retry_after_s` after a
    failure. The times come from APScheduler's own trigger computation; the caller's clock
    decides when they are reached, so the accelerated demo and the tests drive them too."""

    def __init__(self, cfg: FetchConfig, zone: ZoneInfo) -> None:
        self.trigger = OrTrigger(
            [CronTrigger.from_crontab(tab, timezone=zone) for tab in cfg.fetch_cron]
        )
        self.retry_after = timedelta(seconds=cfg.retry_after_s)

    def next_after(self, now: datetime, *, failed: bool) -> datetime:
        # The trigger is inclusive of `now`: step past it so one fire time runs once.
        fire = self.trigger.get_next_fire_time(None, now + timedelta(seconds=1))
        nxt = fire.astimezone(UTC) if fire is not None else now + timedelta(days=1)
        return min(nxt, now + self.retry_after) if failed else nxt
