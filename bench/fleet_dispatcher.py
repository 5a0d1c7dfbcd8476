"""The fleet bench's dispatcher: the reference aggregator's sending side, resending as an
aggregator behind a persistent broker can.

`ReferenceAggregator` resends every pending downlink after each of its own reconnects and then
every `resend_after_s`, re-signing any older than `reissue_after_s`. After a broker restart
that sprays copies at gateways whose first copy the broker already holds (persistence on, and
each gateway's session is persistent, so the broker delivers it when the gateway is back):
at 1000 gateways and 30× most "answers to copies" came from it, all handled during the
reconnect storm. Here:

- a copy the broker acknowledged (PUBACK) is not resent on reconnect: it is in the gateway's
  session; one the broker never acknowledged is resent at once;
- timer resends count from the later of the last send and the gateway's last `online` status
  (a copy waiting for a gateway that is not back yet is in its session: resending it only
  adds a copy to answer), and back off (doubling from `resend_after_s` up to `resend_max_s`);
- a copy the gateway rejected as too old (`clock_skew`, `expired`: queued too long at the
  broker) is signed afresh and sent at once, i.e. right when the gateway's session is back,
  rather than on the next timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Coroutine
from typing import Any

import aiomqtt

from hil.aggregator import Pending, ReferenceAggregator, SiteRecord

_STALE = ("clock_skew", "expired")


class Dispatcher(ReferenceAggregator):
    def __init__(self, *args: Any, resend_max_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resend_max_s = resend_max_s
        self._accepted: set[tuple[str, int]] = set()  # (site, seq) the broker PUBACKed
        self._resends: dict[tuple[str, int], int] = {}
        self._sent_ids: dict[str, tuple[str, Pending]] = {}  # message id -> (site, what)
        self._settled_events: set[str] = set()  # sites whose event a decision answered
        self.sends: dict[str, list[float]] = {}  # site -> wall times an event copy was sent
        self.fresh_copies = 0  # signed afresh after a stale rejection
        self._tasks: set[asyncio.Task[Any]] = set()
        self._online_at: dict[str, float] = {}  # site -> clock.monotonic() of its last online

    async def send(self, site_id: str, type_: str, payload: dict[str, Any]) -> dict[str, Any]:
        message = await super().send(site_id, type_, payload)
        p = self.site(site_id).pending.get(message["seq"])
        if p is not None:
            self._sent_ids[p.id] = (site_id, p)
        return message

    async def ingest(self, site_id: str, type_: str, message: dict[str, Any]) -> None:
        if type_ == "status" and message.get("payload", {}).get("state") == "online":
            self._online_at[site_id] = self._clock.monotonic()
        await super().ingest(site_id, type_, message)

    async def _publish(self, topic: str, raw: bytes, key: tuple[str, int] | None) -> None:
        client = self._client
        if client is None:
            return  # the resend loop sends it after reconnecting
        if key is not None:
            self._sent_at[key] = self._clock.monotonic()
            self.sends.setdefault(key[0], []).append(time.time())
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(topic, raw, qos=1, timeout=10)
            if key is not None:
                self._accepted.add(key)

    async def _resend_loop(self) -> None:
        client: Any = None
        connected_s = 0.0  # clock.monotonic() of this dispatcher's last (re)connect
        while True:
            await asyncio.sleep(0.2)
            if self._client is None:
                continue
            now_s = self._clock.monotonic()
            if self._client is not client:
                client, connected_s = self._client, now_s
            sends: list[Coroutine[Any, Any, Any]] = []
            for site_id, rec in list(self.sites.items()):
                for seq, p in list(rec.pending.items()):
                    key = (site_id, seq)
                    sent = self._sent_at.get(key)
                    if sent is None and key in self._accepted:
                        # Reconnected: the broker holds this copy in the gateway's session.
                        self._sent_at[key] = now_s
                        continue
                    n = self._resends.get(key, 0)
                    wait_s = min(self._resend_after_s * 2**n, self._resend_max_s)
                    online_s = self._online_at.get(site_id, -math.inf)
                    if sent is not None and now_s - max(sent, online_s) < wait_s:
                        continue
                    if key in self._accepted and online_s < connected_s:
                        # Not back since the outage: the broker holds the copy for it (but
                        # resend after resend_max_s, should the broker have lost it).
                        if sent is not None and now_s - sent < self._resend_max_s:
                            continue
                    self._resends[key] = n + 1
                    if now_s - p.signed_at_s > self._reissue_after_s:
                        rec.pending.pop(seq)
                        sends.append(self.send(site_id, p.type, p.payload))
                    else:
                        sends.append(self._publish(p.topic, p.raw, key))
            await asyncio.gather(*sends)

    def _settle(self, rec: SiteRecord, type_: str, message: dict[str, Any]) -> None:
        super()._settle(rec, type_, message)
        if type_ != "event_response":
            return
        payload = message["payload"]
        site_id = message.get("site_id")
        if payload.get("status") != "rejected" or payload.get("reason") not in _STALE:
            if isinstance(site_id, str):
                self._settled_events.add(site_id)
            return
        sent = self._sent_ids.pop(str(payload.get("ref_id")), None)
        if sent is None:
            return
        site, p = sent
        for seq in [s for s, q in rec.pending.items() if q.id == p.id]:
            rec.pending.pop(seq)
        fresher = any(q.payload == p.payload for q in rec.pending.values())
        if site in self._settled_events or fresher:
            return  # decided already, or a fresher copy is on its way
        # The gateway is back and got a copy too old to take: sign it afresh now (sent when
        # the link is up; else pending, and the resend loop sends it after reconnecting).
        self.fresh_copies += 1
        task = asyncio.get_running_loop().create_task(self.send(site, p.type, p.payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
