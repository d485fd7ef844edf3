"""report.html: one self-contained file (inline CSS, PNGs as base64 data URIs).

Self-contained so that the page can be mailed, attached to a ticket or opened from an
object store without the OUT folder beside it: nothing in it refers to another file.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from curation.storage import out_path

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f0f0f0; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; margin: .5em 0; }
figure { margin: 0; } figcaption { color: #666; font-size: .85em; }
code { background: #f4f4f4; padding: 0 .2em; }
li { font-size: .9em; }
nav a { margin-right: 1em; }
"""


def _inline(text: str) -> str:
    """Escape, then render the two Markdown marks the report uses: `code` and **bold**/*em*."""
    text = html.escape(str(text))
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


NUMBER = re.compile(r"^[-+]?[\d,.]+(%| ?[KMGT]?B)?$|^n/a$")


def _cell(value) -> str:
    """A table cell; numbers (counts, sizes, percentages) are right-aligned."""
    text = str(value)
    css = ' class="n"' if NUMBER.match(text) else ""
    return f"<td{css}>{html.escape(text)}</td>"


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(out_path(path).read_bytes()).decode("ascii")


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def render_html(title: str, intro: str, sections: list, out: Path) -> str:
    from curation.report.build import Image, Items, Table

    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", f"<p>{_inline(intro)}</p>",
             "<nav>" + "".join(f"<a href=\"#{_anchor(s.title)}\">{html.escape(s.title)}</a>"
                               for s in sections) + "</nav>"]
    for section in sections:
        parts.append(f"<h2 id=\"{_anchor(section.title)}\">{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, str):
                parts.append(f"<p>{_inline(block)}</p>")
            elif isinstance(block, Table):
                head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
                body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>"
                               for row in block.rows)
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
                             "</table>")
            elif isinstance(block, Image):
                parts.append(f"<figure><img src=\"{data_uri(out_path(out) / str(block.path))}\" "
                             f"alt=\"{html.escape(block.caption)}\"><figcaption>"
                             f"{html.escape(block.caption)}</figcaption></figure>")
            elif isinstance(block, Items):
                parts.append("<ul>" + "".join(f"<li><code>{html.escape(code)}</code>: "
                                              f"{html.escape(text)}</li>"
                                              for code, text in block.items) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
