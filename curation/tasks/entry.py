"""One task as a spec or a registry file writes it, and the task kinds an evaluation knows.

A kind says what a record holds (its roles) and which of those are task text, the text
decontamination removes from the corpus:
  cloze   LAMBADA-style last-word prediction: `text`, whose last word is the answer
  choice  multiple choice by log-likelihood (PiQA, HellaSwag, WinoGrande-style):
          `context`, `choices` (a list), `label` (the 0-based index of the right one)
  yesno   BoolQ-style: `passage`, `question`, `label` (yes / no)
`columns` maps a role to the file's own field name (a list of names for `choices`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from curation.config import StrictModel, check_safe_name

KINDS = ("cloze", "choice", "yesno")
ROLES = {"cloze": ("text",), "choice": ("context", "choices", "label"),
         "yesno": ("passage", "question", "label")}
TEXT_ROLES = {"cloze": ("text",), "choice": ("context", "choices"),
              "yesno": ("passage", "question")}
DEFAULT_FEW_SHOT = 5


class TaskEntry(StrictModel):
    """A task: its test files, the fields decontamination reads and, to be evaluated, its kind.

    `paths` and `fields` may be left out when `name` is a registered task (its entry gives
    them); `fields` may be left out when `kind` is given (the kind's text roles)."""

    name: str
    _safe_name = field_validator("name")(check_safe_name)
    paths: list[str] | None = Field(None, min_length=1)
    fields: list[str] | None = Field(None, min_length=1)
    kind: Literal["cloze", "choice", "yesno"] | None = None
    columns: dict[str, str | list[str]] = {}
    few_shot: int = Field(DEFAULT_FEW_SHOT, ge=1, description="what `--shots few` means")
    fewshot_paths: list[str] | None = Field(
        None, min_length=1, description="files few-shot examples are drawn from (default: "
        "the test files, never the item being answered)")

    @model_validator(mode="after")
    def _columns_fit_the_kind(self) -> TaskEntry:
        if self.paths is not None and self.text_fields() is None:
            raise ValueError(f"task {self.name!r}: give `fields` (the fields that hold task "
                             "text) or a `kind` (" + ", ".join(KINDS) + ")")
        if self.columns and self.kind is None:
            raise ValueError("`columns` needs a `kind` (one of " + ", ".join(KINDS) + ")")
        if self.kind is not None:
            unknown = sorted(set(self.columns) - set(ROLES[self.kind]))
            if unknown:
                raise ValueError(f"columns: {', '.join(unknown)} not a role of kind "
                                 f"{self.kind} (roles: {', '.join(ROLES[self.kind])})")
            listed = [r for r, c in self.columns.items() if isinstance(c, list) and r != "choices"]
            if listed:
                raise ValueError(f"columns.{listed[0]}: one field name, not a list")
        return self

    @property
    def names_only(self) -> bool:
        """True when the entry only names a registered task."""
        return self.paths is None and self.fields is None and self.kind is None

    def column(self, role: str) -> str | list[str]:
        return self.columns.get(role, role)

    def text_fields(self) -> list[str] | None:
        """The fields decontamination reads: `fields`, else the kind's text roles' columns."""
        if self.fields is not None:
            return list(self.fields)
        if self.kind is None:
            return None
        names: list[str] = []
        for role in TEXT_ROLES[self.kind]:
            column = self.column(role)
            names += column if isinstance(column, list) else [column]
        return names
