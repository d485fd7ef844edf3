"""The demo's synthetic web crawl: decent prose mixed with every problem the stages remove
(`filler` is the generated web text only the quality classifier catches).

Pages are generated kind by kind from one seeded `random.Random`, shuffled, and given ids
`web-NNNNN`; the plan records which ids were planted as what (and, for copies, of what),
so tests and the report can check each stage against known truth.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from curation.demo import junk
from curation.demo.edits import jaccard, mojibake, near_copy, typographic
from curation.demo.filler import filler_page
from curation.demo.foreign_texts import ACCENTED_ENGLISH_SENTENCES, FOREIGN_SENTENCES

# Pages of each kind at scale 1.0 (every kind gets at least one page at any scale).
WEB_KIND_COUNTS = {
    "prose": 400,
    "filler": 800,
    "exact_copy_cross_source": 40,
    "exact_copy_web": 20,
    "near_copy_cross_source": 60,
    "near_copy_web": 20,
    "boilerplate_lines": 80,
    "boilerplate_page": 30,
    "keyword_spam": 60,
    "seo": 60,
    "lorem_ipsum": 40,
    "symbol_soup": 40,
    "bullets": 40,
    "repetitive": 60,
    "mojibake": 80,
    "contaminated": 15,
}
FOREIGN_PAGES_PER_LANGUAGE = 16
# Intended Jaccard similarities (word 5-gram shingles) of near copies, cycled through.
NEAR_COPY_JACCARDS = (0.95, 0.9, 0.85, 0.8, 0.7, 0.5)
NEAR_COPY_MIN_WORDS = 150
NEAR_COPY_TOLERANCE = 0.02
SITES = ("example.com", "blog.example.net", "news.example.org", "shop.example.com", "wiki.test")


def kind_counts(scale: float) -> dict[str, int]:
    """Pages per kind at `scale` ("foreign" counts all languages together)."""
    counts = {kind: max(1, round(n * scale)) for kind, n in WEB_KIND_COUNTS.items()}
    counts["foreign"] = len(FOREIGN_SENTENCES) * max(1, round(FOREIGN_PAGES_PER_LANGUAGE * scale))
    return counts


@dataclass
class _Page:
    kind: str
    text: str
    detail: dict = field(default_factory=dict)
    original: _Page | None = None
    id: str = ""


def _prose_page(rng: random.Random, pool: list[str], paragraphs: tuple[int, int]) -> str:
    return "\n".join(
        " ".join(rng.sample(pool, rng.randint(3, 6))) for _ in range(rng.randint(*paragraphs))
    )


def _foreign_page(rng: random.Random, lang: str) -> str:
    chosen = rng.sample(FOREIGN_SENTENCES[lang], rng.randint(8, 12))
    cut = len(chosen) // 2
    return " ".join(chosen[:cut]) + "\n" + " ".join(chosen[cut:])


def _contaminated_page(rng: random.Random, pool: list[str], task_text: str) -> tuple[str, str]:
    """Prose with a 15-30-word span of task text in the middle of a paragraph."""
    words = task_text.split()
    length = min(len(words), rng.randint(15, 30))
    start = rng.randint(0, len(words) - length)
    passage = " ".join(words[start : start + length])
    middle = f"{rng.choice(pool)} {passage} {rng.choice(pool)}"
    page = "\n".join([_prose_page(rng, pool, (2, 2)), middle, _prose_page(rng, pool, (2, 2))])
    return page, passage


def _cross_source_copies(
    originals: list[dict], exact: int, near: int, rng: random.Random
) -> list[_Page]:
    """Exact copies of some documents of the other sources and near copies of others.

    A near copy is kept only when its measured Jaccard is within `NEAR_COPY_TOLERANCE` of
    the intended one: repeated shingles in code-heavy text can throw the edit count off.
    """
    order = rng.sample(originals, len(originals))
    pages = [_Page("exact_copy_cross_source", o["text"], {"of": o["ref"]}) for o in order[:exact]]
    for original in order[exact:]:
        if len(pages) == exact + near:
            break
        if len(original["text"].split()) < NEAR_COPY_MIN_WORDS:
            continue
        target = NEAR_COPY_JACCARDS[(len(pages) - exact) % len(NEAR_COPY_JACCARDS)]
        try:
            text = near_copy(original["text"], target, rng)
        except ValueError:
            continue
        measured = jaccard(original["text"], text)
        if abs(measured - target) <= NEAR_COPY_TOLERANCE:
            detail = {"of": original["ref"], "intended_jaccard": target}
            detail["measured_jaccard"] = round(measured, 4)
            pages.append(_Page("near_copy_cross_source", text, detail))
    if len(pages) < exact + near:
        raise ValueError(
            f"demo corpus too small for {exact} exact and {near} near copies of its "
            f"{len(originals)} pydocs and docstrings documents; use a larger scale (up to 1, "
            "where those sources stop growing)"
        )
    return pages


def build_web_pages(
    originals: list[dict], pool: list[str], tasks: list[dict], scale: float, seed: int
) -> tuple[list[dict], dict]:
    """Web records {"id", "url", "text"} and the plan of what was planted where.

    `originals` are documents of the other sources ({"text", "ref"}: ref locates the
    document in its source) to copy; `pool` is decent prose sentences; `tasks` are the demo
    test set items whose text is planted into the contaminated pages.
    """
    rng = random.Random(seed)
    counts = kind_counts(scale)
    pages: list[_Page] = []

    def prose() -> _Page:
        return _Page("prose", _prose_page(rng, pool, (2, 4)))

    plain = [prose() for _ in range(counts["prose"] - counts["near_copy_web"])]
    pages += plain
    for index in range(counts["near_copy_web"]):
        original = _Page("prose", _prose_page(rng, pool, (6, 7)))
        target = NEAR_COPY_JACCARDS[index % len(NEAR_COPY_JACCARDS)]
        copy = _Page("near_copy_web", near_copy(original.text, target, rng), original=original)
        copy.detail = {"intended_jaccard": target}
        pages += [original, copy]
    for original in rng.sample(plain, counts["exact_copy_web"]):
        pages.append(_Page("exact_copy_web", original.text, original=original))

    # The other sources stop growing at scale 1 (the stdlib has only so many topics and
    # docstrings), so past it their copies are capped at a share of what there is to copy.
    pages += _cross_source_copies(
        originals,
        min(counts["exact_copy_cross_source"], len(originals) // 4),
        min(counts["near_copy_cross_source"], len(originals) // 3),
        rng,
    )

    for _ in range(counts["boilerplate_lines"]):
        pages.append(_Page("boilerplate_lines", junk.with_boilerplate_lines(prose().text, rng)))
    generators = {
        "boilerplate_page": junk.boilerplate_page,
        "keyword_spam": junk.keyword_spam_page,
        "seo": junk.seo_page,
        "lorem_ipsum": junk.lorem_ipsum_page,
        "symbol_soup": junk.symbol_soup_page,
        "bullets": junk.bullet_page,
    }
    for kind, generate in generators.items():
        pages += [_Page(kind, generate(rng)) for _ in range(counts[kind])]
    pages += [
        _Page("repetitive", junk.repetitive_page(rng, pool)) for _ in range(counts["repetitive"])
    ]
    pages += [_Page("filler", filler_page(rng)) for _ in range(counts["filler"])]

    for index in range(counts["mojibake"]):
        codec = "latin-1" if index % 4 == 3 else "cp1252"
        lines = prose().text.split("\n")
        lines.insert(
            rng.randint(0, len(lines)), " ".join(rng.sample(ACCENTED_ENGLISH_SENTENCES, 2))
        )
        clean = typographic("\n".join(lines))
        pages.append(_Page("mojibake", mojibake(clean, codec), {"codec": codec}))

    per_language = counts["foreign"] // len(FOREIGN_SENTENCES)
    for lang in sorted(FOREIGN_SENTENCES):
        pages += [
            _Page("foreign", _foreign_page(rng, lang), {"lang": lang}) for _ in range(per_language)
        ]

    for task_index in rng.choices(range(len(tasks)), k=counts["contaminated"]):
        text, passage = _contaminated_page(rng, pool, tasks[task_index]["context"])
        pages.append(_Page("contaminated", text, {"task": task_index, "passage": passage}))

    rng.shuffle(pages)
    records = []
    for number, page in enumerate(pages):
        page.id = f"web-{number:05d}"
        url = f"https://{rng.choice(SITES)}/page/{rng.getrandbits(32):08x}"
        records.append({"id": page.id, "url": url, "text": page.text})
    return records, _plan(pages)


def _plan(pages: list[_Page]) -> dict:
    """Per kind, the planted page ids with what each one is a copy of or contains."""
    plan: dict[str, list[dict]] = {}
    for page in sorted(pages, key=lambda p: p.id):
        if page.kind == "prose":
            continue
        entry = {"id": page.id, **page.detail}
        if page.original is not None:
            entry["of"] = {"source": "web", "id": page.original.id}
            if "intended_jaccard" in entry:
                entry["measured_jaccard"] = round(jaccard(page.original.text, page.text), 4)
        plan.setdefault(page.kind, []).append(entry)
    return dict(sorted(plan.items()))
