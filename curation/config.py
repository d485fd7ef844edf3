"""The base of every spec model: unknown keys are errors, so a typo never passes silently."""

import re

from pydantic import BaseModel, ConfigDict

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_safe_name(name: str) -> str:
    """A name that becomes a folder or file name under OUT: it must not escape OUT."""
    if not SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"{name!r} must be letters, digits, '_', '.', '-' "
                         "(it names files under OUT)")
    return name


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def nested_model(annotation, base: type[BaseModel] = BaseModel) -> type[BaseModel] | None:
    """The model class a field holds (directly, or inside Optional/list/dict/Union): where
    an error message looks up the keys a misspelt one could have been."""
    if isinstance(annotation, type) and issubclass(annotation, base):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = nested_model(arg, base)
        if found is not None:
            return found
    return None
