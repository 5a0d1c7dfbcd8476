"""What the 1.6 and 2.0.1 central-system links share: construction, liveness and the pending
gate. Mixed in before `ocpp.vXX.ChargePoint`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ocpp.exceptions import SecurityError

from hems.devices.ocpp.rpc import StrictRouting

if TYPE_CHECKING:
    from hems.devices.ocpp.charger import OcppCharger


class CsmsLink(StrictRouting):
    version: str
    _peer = "charger"  # what the version's spec calls the other end, for error texts

    def __init__(
        self, identity: str, connection: Any, charger: OcppCharger, response_timeout_s: float
    ) -> None:
        super().__init__(identity, connection, response_timeout=response_timeout_s)  # type: ignore[call-arg]
        self._strict_init()
        self.charger = charger

    # -- hooks of StrictRouting --------------------------------------------------------
    def _on_any_message(self) -> None:
        self.charger.on_alive()

    def _gate(self, action: str) -> None:
        if self.charger.pending and action != "BootNotification":
            raise SecurityError(description=f"{self._peer} is pending: only BootNotification")
