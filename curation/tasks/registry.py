"""The task registry: names -> task entries, shared by decontamination and evaluation.

Entries come from registry files (YAML `tasks: [entry, ...]`, paths relative to the file):
the shipped one (curation/tasks/shipped/registry.yaml) and any a user passes. A corpus spec
may name a registered task alone (`{name: pydoc_cloze}`) or spell it out; spelt out under a
registered name, its files (compared by content) and text fields must be the registry's,
else a TaskError says which files differ: one name means one test set, everywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from curation.tasks.entry import DEFAULT_FEW_SHOT, TaskEntry
from curation.tasks.files import task_files

SHIPPED = Path(__file__).resolve().parent / "shipped" / "registry.yaml"


class TaskError(ValueError):
    """A task that cannot be used: unknown, unreadable, or not the same task in two places."""


@dataclass(frozen=True)
class ResolvedTask:
    """A task with its files found: what decontamination reads and evaluation scores."""

    entry: TaskEntry  # complete: paths and text fields known
    files: tuple[Path, ...]
    fewshot_files: tuple[Path, ...]
    origin: str  # where the entry was written, for messages

    @property
    def name(self) -> str:
        return self.entry.name

    def text_fields(self) -> list[str]:
        return self.entry.text_fields() or []

    def digests(self) -> dict[str, str]:
        return {str(path): file_sha256(path) for path in self.files}

    def record(self) -> dict:
        """What OUT/decontamination.json keeps of the task, so an evaluation can find it."""
        return {"kind": self.entry.kind, "columns": dict(self.entry.columns),
                "fields": self.text_fields(), "few_shot": self.entry.few_shot,
                "files": self.digests(),
                "fewshot_files": {str(p): file_sha256(p) for p in self.fewshot_files}}

    @classmethod
    def from_record(cls, name: str, record: dict, origin: str) -> ResolvedTask:
        entry = TaskEntry(name=name, paths=list(record["files"]), fields=record["fields"],
                          kind=record.get("kind"), columns=record.get("columns") or {},
                          few_shot=record.get("few_shot", DEFAULT_FEW_SHOT),
                          fewshot_paths=list(record.get("fewshot_files") or {}) or None)
        return cls(entry, tuple(Path(p) for p in record["files"]),
                   tuple(Path(p) for p in record.get("fewshot_files") or {}), origin)


def file_sha256(path: Path) -> str:
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=256)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


Registry = dict[str, tuple[TaskEntry, Path, str]]  # name -> (entry, base dir, origin)


def load_registry(path: str | Path) -> Registry:
    """The entries of one registry file; every problem named by file and YAML path."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TaskError(f"{path}: cannot read the task registry ({exc.strerror or exc})") \
            from None
    except yaml.YAMLError as exc:
        raise TaskError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise TaskError(f"{path}: a task registry is a mapping with a `tasks:` list")
    registry: Registry = {}
    for i, raw in enumerate(data["tasks"]):
        try:
            entry = TaskEntry.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise TaskError(f"{path}: tasks[{i}]{'.' + where if where else ''}: "
                            f"{err['msg'].removeprefix('Value error, ')}") from None
        if entry.paths is None or entry.text_fields() is None:
            raise TaskError(f"{path}: tasks[{i}] ({entry.name}): a registered task needs "
                            "`paths` and a `kind` or `fields`")
        if entry.name in registry:
            raise TaskError(f"{path}: tasks[{i}]: task {entry.name!r} is listed twice")
        registry[entry.name] = (entry, path.resolve().parent, f"{path} (tasks[{i}])")
    return registry


def shipped_registry() -> Registry:
    return load_registry(SHIPPED)


def build_registry(files: list[str | Path] = ()) -> Registry:
    """The shipped entries plus those of `files`; a name in two of them must be one task."""
    registry = shipped_registry()
    for path in files:
        for name, (entry, base, origin) in load_registry(path).items():
            if name in registry:
                check_same(resolve_entry(entry, base, origin),
                           resolve_entry(*registry[name]))
            else:
                registry[name] = (entry, base, origin)
    return registry


def resolve_entry(entry: TaskEntry, base_dir: Path, origin: str) -> ResolvedTask:
    """The entry's files found (globs relative to `base_dir`)."""
    label = f"task {entry.name!r} ({origin})"
    files = task_files(entry.paths or [], base_dir, label)
    shots = task_files(entry.fewshot_paths, base_dir, label) if entry.fewshot_paths else []
    return ResolvedTask(entry, tuple(files), tuple(shots), origin)


def resolve(entry: TaskEntry, base_dir: Path, origin: str,
            registry: Registry | None = None) -> ResolvedTask:
    """A spec's task entry: a registered name alone is the registry's entry; an entry spelt
    out under a registered name must be the same task (files by content, text fields)."""
    registry = shipped_registry() if registry is None else registry
    registered = registry.get(entry.name)
    if registered is None:
        if entry.paths is None or entry.text_fields() is None:
            raise TaskError(f"{origin}: task {entry.name!r} is not a registered task "
                            f"(registered: {', '.join(sorted(registry)) or 'none'}); give "
                            "its `paths` and a `kind` or `fields`")
        return resolve_entry(entry, base_dir, origin)
    theirs = resolve_entry(*registered)
    if entry.names_only:
        return theirs
    filled = entry.model_copy(update={
        "paths": entry.paths or theirs.entry.paths,
        "fields": entry.text_fields() or theirs.text_fields(),
        "kind": entry.kind or theirs.entry.kind})
    ours = resolve_entry(filled, base_dir if entry.paths else registered[1], origin)
    check_same(ours, theirs)
    return ours


def check_same(ours: ResolvedTask, theirs: ResolvedTask) -> None:
    """One task name, one test set: the same file contents and the same text fields."""
    if sorted(ours.digests().values()) != sorted(theirs.digests().values()):
        raise TaskError(
            f"task {ours.name!r}: {ours.origin} reads {_names(ours.files)} but "
            f"{theirs.origin} reads {_names(theirs.files)}, and their contents differ: one "
            "task name must mean one test set (point both at the same files, or rename one)")
    if ours.text_fields() != theirs.text_fields():
        raise TaskError(
            f"task {ours.name!r}: {ours.origin} reads the text fields {ours.text_fields()} "
            f"but {theirs.origin} reads {theirs.text_fields()}: one task name must mean the "
            "same task text (use the same fields, or rename one)")


def _names(files: tuple[Path, ...]) -> str:
    return "[" + ", ".join(str(f) for f in files) + "]"
