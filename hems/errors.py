"""hems exceptions, one tree so callers catch at the depth they care about.

* HemsError
  + ConfigError           a config or profile value is wrong (names the field)
  + NotSupported          the device lacks the capability
  + DeviceError           a device failed to answer or answered badly
    - DeviceUnreachable
    - DeviceTimeout
    - DeviceRejected      Modbus exception code, OCPP CallError or Rejected
    - BadValue            NaN sentinel, out of range, impossible jump
  + PlanningError
    - Infeasible          names the input that makes the problem impossible
    - SolverTimeout
  + UplinkError
    - MessageRejected     a signed message failed verification (names the reason)
  + StoreError
"""

from __future__ import annotations


class HemsError(Exception):
    """Base of every error hems raises on purpose."""


class ConfigError(HemsError):
    def __init__(self, field: str, problem: str, line: int | None = None) -> None:
        where = f" (line {line})" if line is not None else ""
        super().__init__(f"{field}: {problem}{where}")
        self.field = field
        self.problem = problem
        self.line = line


class NotSupported(HemsError):
    """The device lacks this capability; not a failure."""


class DeviceError(HemsError):
    def __init__(self, device_id: str, reason: str) -> None:
        super().__init__(f"{device_id}: {reason}")
        self.device_id = device_id
        self.reason = reason


class DeviceUnreachable(DeviceError):
    pass


class DeviceTimeout(DeviceError):
    pass


class DeviceRejected(DeviceError):
    pass


class BadValue(DeviceError):
    pass


class PlanningError(HemsError):
    pass


class Infeasible(PlanningError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class SolverTimeout(PlanningError):
    pass


class UplinkError(HemsError):
    pass


class MessageRejected(UplinkError):
    def __init__(self, reason: str, message_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id


class StoreError(HemsError):
    pass
