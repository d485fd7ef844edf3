"""The base of every spec model: unknown keys are errors, so a typo never passes silently."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
