"""`python -m curation.tasks.build_shipped`: the shipped test sets, one per task kind.

Made from the Python documentation topics the demo corpus holds out of its pydocs source
(curation/demo/python_text.py TASK_TOPICS), so a model trained on the demo corpus has seen
this text only in the web pages planted as contamination, which decontamination cuts:
  pydoc_cloze   a paragraph; its last word is the answer (LAMBADA's form)
  pydoc_choice  a sentence without its end; the right end among 4 (HellaSwag's form)
  pydoc_yesno   a paragraph without its last sentence; "does it go on with <sentence>?"
                yes for its own last sentence, no for another paragraph's (BoolQ's form)
The files are committed (the topics' wording moves between Python versions); this module
rebuilds them deterministically from the running Python's docs.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from curation.demo.python_text import PYDOC_TOPICS, TASK_TOPICS, prose_paragraphs, sentences

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
SEED = 2021
ITEMS = 40
CHOICES = 4
ENDING_WORDS = 8
_LAST_WORD = re.compile(r"\s([A-Za-z]{3,})\.$")


def held_out_paragraphs() -> list[str]:
    return [p for name in TASK_TOPICS for p in prose_paragraphs(PYDOC_TOPICS[name], 20)]


def cloze_items(paragraphs: list[str], rng: random.Random) -> list[dict]:
    usable = [p[:-1] for p in paragraphs if _LAST_WORD.search(p)]
    return [{"text": text} for text in rng.sample(usable, min(ITEMS, len(usable)))]


def choice_items(paragraphs: list[str], rng: random.Random) -> list[dict]:
    pool = [s.split() for p in paragraphs for s in sentences(p) if len(s.split()) >= 10]
    # endings of at most ENDING_WORDS words: a choice must fit a small model's context
    splits = [(" ".join(w[:-n]), " ".join(w[-n:])) for w in pool
              for n in [min(ENDING_WORDS, len(w) // 2)]]
    endings = sorted({end for _, end in splits})
    items = []
    for context, ending in rng.sample(splits, min(ITEMS, len(splits))):
        wrong = rng.sample([e for e in endings if e != ending], CHOICES - 1)
        label = rng.randrange(CHOICES)
        items.append({"context": context, "choices": wrong[:label] + [ending] + wrong[label:],
                      "label": label})
    return items


def yesno_items(paragraphs: list[str], rng: random.Random) -> list[dict]:
    split = [sentences(p) for p in paragraphs]
    split = [s for s in split if len(s) >= 2]
    items = []
    for i in rng.sample(range(len(split)), min(ITEMS, len(split))):
        answer = len(items) % 2 == 0  # half yes, half no
        other = rng.choice([j for j in range(len(split)) if j != i])
        follow = split[i][-1] if answer else split[other][-1]
        items.append({"passage": " ".join(split[i][:-1]),
                      "question": f'does the passage go on with "{follow}"', "label": answer})
    return items


def build(out_dir: Path = SHIPPED_DIR) -> dict[str, int]:
    paragraphs = held_out_paragraphs()
    built = {}
    for name, make in (("pydoc_cloze", cloze_items), ("pydoc_choice", choice_items),
                       ("pydoc_yesno", yesno_items)):
        items = make(paragraphs, random.Random(f"{SEED}-{name}"))
        lines = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
        (out_dir / f"{name}.jsonl").write_text(lines, encoding="utf-8")
        built[name] = len(items)
    return built


if __name__ == "__main__":
    for task, count in build().items():
        print(f"{SHIPPED_DIR / task}.jsonl: {count} items")
