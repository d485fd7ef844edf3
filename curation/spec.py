"""Corpus specs: the YAML a user writes, validated before any work starts.

Every problem is reported at once, each with its YAML path (`sources[2].weight: ...`), so a
user fixes a spec in one round trip instead of one error per run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from curation.config import StrictModel, check_safe_name, nested_model
from curation.stages.registry import STAGES
from curation.tokenize import TokenizerConfig


class SpecError(Exception):
    """A spec that cannot be run; `problems` lists every problem with its YAML path."""

    def __init__(self, where: str, problems: list[str], missing_files: bool = False):
        self.where = where
        self.problems = problems
        self.missing_files = missing_files  # every problem is a file that is not there
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{where}: {len(problems)} problem(s):\n{lines}")


class SourceSpec(StrictModel):
    name: str
    paths: list[str] = Field(min_length=1)
    format: Literal["jsonl", "parquet"] = "jsonl"
    text_field: str = "text"
    id_field: str | None = None
    languages: list[str] | None = None
    priority: int = 0
    weight: float | None = Field(default=None, gt=0)
    epochs: float | None = Field(default=None, gt=0)

    _safe_name = field_validator("name")(check_safe_name)

    @model_validator(mode="after")
    def _check(self) -> SourceSpec:
        if self.weight is not None and self.epochs is not None:
            raise ValueError("give `weight` or `epochs`, not both")
        return self


class ReadConfig(StrictModel):
    """How raw files become partitions."""

    partition_rows: int = Field(default=5000, gt=0)
    max_record_bytes: int = Field(default=16 * 2**20, gt=0)
    # Later copies of an id: `ledger` rows (read/duplicate_id), or `error` before any stage.
    on_duplicate_id: Literal["ledger", "error"] = "ledger"


# The stages to run, one optional key per registered stage; a stage left out is skipped.
# Order is always the registry's.
StagesSpec = create_model(
    "StagesSpec", __base__=StrictModel,
    **{cls.name: (cls.config_class | None, None) for cls in STAGES},
)


class Spec(StrictModel):
    name: str
    seed: int = 1234
    sources: list[SourceSpec] = Field(min_length=1)
    stages: StagesSpec = StagesSpec()
    read: ReadConfig = ReadConfig()
    tokenizer: TokenizerConfig | None = None

    _base_dir: Path = PrivateAttr(default=Path("."))

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the spec are resolved against (the YAML's folder)."""
        return self._base_dir

    def source(self, name: str) -> SourceSpec:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(f"spec {self.name!r} has no source {name!r}")

    def hash(self) -> str:
        """A stable hash of everything the spec says (not where it was read from)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


def _yaml_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _allowed_keys(loc: tuple) -> list[str] | None:
    """The keys a mapping at `loc` accepts, for 'unknown key' messages."""
    model: type[StrictModel] | None = Spec
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = nested_model(field.annotation, StrictModel)
    return sorted(model.model_fields) if model is not None else None



def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p and p != ""))
        path = _yaml_path(loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            problems.append(f"{path}: unknown key{hint}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {msg}")
    return problems


def _cross_checks(data: dict) -> list[str]:
    """Rules that span several keys: names unique, referenced sources exist, one kind of
    blend share. They read the parsed YAML, so they are reported together with the field
    errors of a spec that does not validate."""
    problems = []
    sources = [s if isinstance(s, dict) else {} for s in _as_list(data.get("sources"))]
    names = [s.get("name") for s in sources]
    for i, name in enumerate(names):
        if name is not None and name in names[:i]:
            problems.append(f"sources[{i}].name: duplicate source name {name!r}")
    stages = data.get("stages") if isinstance(data.get("stages"), dict) else {}
    quality = stages.get("quality") if isinstance(stages.get("quality"), dict) else {}
    named = [(f"stages.quality.{key}", quality.get(key)) for key in ("positive", "negative")]
    for cls in STAGES:
        config = stages.get(cls.name) if isinstance(stages.get(cls.name), dict) else {}
        named += [(f"stages.{cls.name}.{key}", config.get(key)) for key in ("only", "exempt")]
    known = ", ".join(str(n) for n in names if n is not None)
    for where, listed in named:
        for j, name in enumerate(_as_list(listed)):
            if isinstance(name, str) and name not in names:
                problems.append(f"{where}[{j}]: no source named {name!r} (sources: {known})")
    shares = [[k for k in ("weight", "epochs") if s.get(k) is not None] for s in sources]
    if any(shares) and not all(shares):
        problems += [f"sources[{i}]: no `weight` or `epochs` while other sources have one"
                     for i, share in enumerate(shares) if not share]
    with_weight = [f"sources[{i}]" for i, share in enumerate(shares) if share == ["weight"]]
    if with_weight:
        problems += [f"sources[{i}].epochs: mixed with `weight` in {', '.join(with_weight)}; "
                     "the blend takes a weight for every source or epochs for every source"
                     for i, share in enumerate(shares) if share == ["epochs"]]
    return problems


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else []


def _file_checks(spec: Spec) -> list[str]:
    """Every file the spec names exists: inputs, task files, a given model or tokenizer."""
    from curation.io import InputError, expand_paths

    problems = []
    for i, source in enumerate(spec.sources):
        try:
            expand_paths(source.paths, spec.base_dir)
        except InputError as exc:
            problems.append(f"sources[{i}].paths: {exc}")
    for cls in STAGES:
        config = getattr(spec.stages, cls.name)
        if config is not None:
            problems += [f"stages.{cls.name}.{p}" for p in config.missing_files(spec.base_dir)]
    path = spec.tokenizer and spec.tokenizer.path
    if path and not (spec.base_dir / path).is_file():
        problems.append(f"tokenizer.path: no file at {spec.base_dir / path}")
    return problems


def parse_spec(data: object, where: str = "spec", base_dir: Path | None = None,
               check_files: bool = True) -> Spec:
    """Validate a spec given as parsed YAML; raise SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(where, [f"(top level): must be a mapping, got {type(data).__name__}"])
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(where, _problems(exc) + _cross_checks(data)) from None
    spec._base_dir = (base_dir or Path(".")).resolve()
    problems = _cross_checks(data)
    if problems:
        raise SpecError(where, problems)
    if check_files and (problems := _file_checks(spec)):
        raise SpecError(where, problems, missing_files=True)
    return spec


def load_spec(path: str | Path, check_files: bool = True) -> Spec:
    """Read and validate a YAML spec file (safe loader only)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read the spec: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise SpecError(str(path), [f"{at}not valid YAML ({problem})"]) from None
    return parse_spec(data, where=str(path), base_dir=path.parent, check_files=check_files)
