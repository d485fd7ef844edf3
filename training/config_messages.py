"""How an invalid training config is reported: every problem with its YAML path, a misspelt
key with the keys that section accepts (as `curate` reports a spec), and a problem that a
`--set` (or `--tp/--pp/--dp`) flag caused named by that flag rather than by the YAML file."""

from __future__ import annotations

import re

from pydantic import BaseModel, ValidationError

from curation.config import nested_model


def _field(model: type[BaseModel], key: str):
    """A field by its YAML name (the alias where there is one: batch.global)."""
    for name, field in model.model_fields.items():
        if (field.alias or name) == key:
            return field
    return None


def allowed_keys(root: type[BaseModel], loc: tuple) -> list[str] | None:
    """The keys the mapping holding `loc`'s last part accepts."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = _field(model, part) if model is not None else None
        if field is None:
            return None
        model = nested_model(field.annotation)
    if model is None:
        return None
    return sorted(field.alias or name for name, field in model.model_fields.items())


def _flag_for(loc: tuple, error_type: str, message: str, flags: dict[str, str]) -> str | None:
    """The flag whose key path this problem is about, if any. A check across several keys
    (a validator) is the flag's when it names the flag's key."""
    path = [str(p) for p in loc]
    for key, flag in flags.items():
        parts = key.split(".")
        if error_type == "value_error":  # a check across keys: is this key one of them?
            if parts == path or key in message or (
                    parts[:-1] == path and re.search(rf"\b{re.escape(parts[-1])}\b", message)):
                return flag
        elif parts[: len(path)] == path or path[: len(parts)] == parts:
            return flag
    return None


def describe(err: ValidationError, root: type[BaseModel], source: str,
             flags: dict[str, str]) -> str:
    """One message for all of `err`'s problems; `flags` maps a key path to the flag that set
    it (`optim.lr` -> `--set optim.lr=abc`)."""
    from_flags, from_file = [], []
    for e in err.errors():
        loc = tuple(e["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = allowed_keys(root, loc)
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            in_file, by_flag = f"{where}: unknown key{hint}", f"unknown key {where}{hint}"
        else:
            message = e["msg"].removeprefix("Value error, ")
            if e["type"] != "value_error":  # a cross-field check already names its values
                message += f" (got {e.get('input')!r})"
            in_file = by_flag = f"{where}: {message}" if loc else message
        flag = _flag_for(loc, e["type"], in_file, flags)
        if flag is not None:
            from_flags.append(f"{flag}: {by_flag}")
        else:
            from_file.append(in_file)
    if not from_file:
        return "\n".join(from_flags)
    return f"invalid training config {source}:\n" + "\n".join(
        f"  {line}" for line in from_file + from_flags)
