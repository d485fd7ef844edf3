"""Real English text every Python installation carries: the pydoc topics and stdlib docstrings.

The demo corpus is built from this text so it needs no download, and the language, quality
and deduplication stages see real prose. Everything here is a pure function of the running
Python's own files, iterated in sorted order, so the same Python version gives the same text.
"""

from __future__ import annotations

import ast
import importlib.util
import random
import re
from pathlib import Path
from pydoc_data.topics import topics as PYDOC_TOPICS

# Topics held out of the pydocs source: the demo test set's contexts come from them, so the
# only training documents that contain task text are the contaminated web pages planted on
# purpose. Each shares no 13-gram with the other topics.
TASK_TOPICS = ("calls", "import", "objects", "raise", "strings")

# Pure-Python (or platform-independent) stdlib modules that import quickly, without side
# effects, and define the same public names on every platform.
DOCSTRING_MODULES = tuple(
    """
abc argparse ast base64 bdb bisect calendar cmd code codecs colorsys configparser contextlib
copy copyreg csv dataclasses datetime decimal difflib dis doctest enum filecmp fileinput
fnmatch fractions functools getopt gettext glob graphlib gzip heapq html html.parser
http.client inspect ipaddress json json.decoder json.encoder keyword linecache logging
logging.handlers mailbox mimetypes netrc numbers operator optparse pathlib pickle
pickletools plistlib pprint profile pstats queue quopri random reprlib sched secrets shelve
shlex statistics string stringprep struct tabnanny tarfile textwrap timeit token tokenize
trace traceback types unittest.case urllib.parse uuid warnings wave weakref xml.dom.minidom
xml.etree.ElementTree zipapp zipfile zoneinfo
""".split()
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“(])")
_BLANK_LINES = re.compile(r"\n\s*\n")


def pydoc_topic_records() -> list[dict]:
    """One record per pydoc topic (task topics left out), sorted by topic name."""
    return [
        {"id": f"pydoc-{name}", "text": PYDOC_TOPICS[name], "title": name}
        for name in sorted(PYDOC_TOPICS)
        if name not in TASK_TOPICS
    ]


def _own_docstrings(module_name: str) -> list[str]:
    """Docstrings of the module, its public classes and functions, and their public methods.

    Read from the module's source with `ast`, not from the imported objects: other libraries
    patch stdlib modules at import time (transformers adds `Logger.warning_advice`), and the
    corpus must not depend on what else the process has imported.
    """
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return []
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    pieces = [ast.get_docstring(tree)]
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in sorted((n for n in tree.body if isinstance(n, definitions)),
                       key=lambda n: n.name):
        if node.name.startswith("_"):
            continue
        pieces.append(ast.get_docstring(node))
        if isinstance(node, ast.ClassDef):
            methods = [m for m in node.body if isinstance(m, (ast.FunctionDef,
                                                              ast.AsyncFunctionDef))]
            for method in sorted(methods, key=lambda m: m.name):
                if not method.name.startswith("_"):
                    pieces.append(ast.get_docstring(method))
    return [piece for piece in pieces if piece and len(piece.split()) >= 3]


def docstring_records(target_words: int = 150, min_words: int = 50) -> list[dict]:
    """Stdlib docstrings grouped, module by module, into documents of about `target_words`.

    A module's last group is merged into its previous one when it falls under `min_words`;
    a module with less than `min_words` in all is left out.
    """
    records = []
    for module_name in DOCSTRING_MODULES:
        groups: list[list[str]] = []
        words = target_words
        for piece in _own_docstrings(module_name):
            if words >= target_words:
                groups.append([])
                words = 0
            groups[-1].append(piece)
            words += len(piece.split())
        if groups and words < min_words and len(groups) > 1:
            groups[-2].extend(groups.pop())
        for group in groups:
            text = "\n\n".join(group)
            if len(text.split()) >= min_words:
                records.append({"text": text, "module": module_name})
    return records


def prose_paragraphs(text: str, min_words: int = 12) -> list[str]:
    """Paragraphs of running prose (no indented code, grammar or tables), one line each."""
    paragraphs = []
    for block in _BLANK_LINES.split(text):
        lines = block.split("\n")
        if any(not line or line[0].isspace() for line in lines):
            continue
        paragraph = " ".join(" ".join(lines).split())
        words = paragraph.split()
        if len(words) >= min_words and paragraph.endswith(".") and not paragraph.endswith(".."):
            paragraphs.append(paragraph)
    return paragraphs


def sentences(paragraph: str) -> list[str]:
    return _SENTENCE_END.split(paragraph)


def prose_sentence_pool(texts: list[str]) -> list[str]:
    """Distinct prose sentences of 6 to 60 words from `texts`, in first-seen order."""
    pool: dict[str, None] = {}
    for text in texts:
        for paragraph in prose_paragraphs(text):
            for sentence in sentences(paragraph):
                if 6 <= len(sentence.split()) <= 60 and sentence[-1] in ".!?":
                    pool.setdefault(sentence, None)
    return list(pool)


def demo_qa_tasks(count: int, seed: int) -> list[dict]:
    """Fill-in-the-blank reading tasks whose contexts are paragraphs of the task topics.

    The question is one sentence of the context with its longest word blanked out; the
    answer is that word. Decontamination treats question and context as task text.
    """
    rng = random.Random(seed)
    paragraphs = [
        paragraph
        for name in TASK_TOPICS
        for paragraph in prose_paragraphs(PYDOC_TOPICS[name], min_words=30)
        if len(paragraph.split()) <= 150
    ]
    tasks = []
    for context in rng.sample(paragraphs, min(count, len(paragraphs))):
        candidates = [s for s in sentences(context) if len(s.split()) >= 10]
        sentence = rng.choice(candidates or [context])
        words = re.findall(r"[A-Za-z]{5,}", sentence)
        answer = max(words, key=len)
        question = "Fill in the blank: " + re.sub(rf"\b{answer}\b", "_____", sentence, count=1)
        tasks.append({"question": question, "context": context, "answer": answer})
    return tasks
