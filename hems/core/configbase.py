"""Shared pieces for every config model: strict models and common field types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Unknown keys are errors; values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


Port = Annotated[int, Field(ge=1, le=65535, description="TCP port, 1..65535")]
UnitId = Annotated[int, Field(ge=0, le=247, description="Modbus unit id, 0..247")]
DeviceId = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$",
        description="lower-case letters, digits, '-' and '_'; at most 48 characters",
    ),
]
