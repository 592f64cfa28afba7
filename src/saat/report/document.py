"""A tiny document model rendered twice: to Markdown and to one self-contained HTML file.

All text is plain text. The renderers do the escaping (``html.escape`` for HTML; ``|``, ``<``, ``>`` and line
breaks for Markdown), so no text read from a data file can inject markup into either output.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str
    note: bool = False  # a remark about missing inputs or caveats, shown in a muted style


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    paper_rows: set[int] = field(default_factory=set)  # indices of rows holding the paper's numbers (styled apart)


@dataclass
class Figure:
    path: Path
    caption: str


Block = Heading | Paragraph | Bullets | Table | Figure


# --- Markdown -------------------------------------------------------------------------------------------------------

_MD_SPECIAL = "\\`*_[]!#"  # backslash first: every Markdown construct that could start a link, image or markup


def md_text(text: str) -> str:
    """Plain text for Markdown: HTML brackets as entities and every character that could start Markdown markup
    (links such as ``[x](javascript:...)``, images, emphasis, code) backslash-escaped, so text read from files and
    names renders as written and never as markup."""
    out = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in _MD_SPECIAL:
        out = out.replace(ch, "\\" + ch)
    return out


def md_cell(text: str) -> str:
    return md_text(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def to_markdown(title: str, blocks: list[Block], base: Path) -> str:
    out = [f"# {md_text(title)}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * min(max(b.level, 2), 6) + " " + md_cell(b.text), ""]
        elif isinstance(b, Paragraph):
            out += [("> " if b.note else "") + md_cell(b.text), ""]
        elif isinstance(b, Bullets):
            out += [f"- {md_cell(item)}" for item in b.items] + [""]
        elif isinstance(b, Table):
            if b.caption:
                out += [f"**{md_cell(b.caption)}**", ""]
            out.append("| " + " | ".join(md_cell(h) for h in b.header) + " |")
            out.append("|" + "---|" * len(b.header))
            out += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Figure):
            rel = _relative(b.path, base)
            alt = md_cell(b.caption).replace("[", "(").replace("]", ")")
            out += [f"![{alt}]({rel.replace(' ', '%20').replace(')', '%29')})", "", f"*{md_cell(b.caption)}*", ""]
    return "\n".join(out).rstrip() + "\n"


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


# --- HTML -----------------------------------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f0f0f0}tr.paper td{background:#f6f3e8;color:#555;font-style:italic}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
p.note{color:#666;border-left:3px solid #ccc;padding-left:.7em}
figure{margin:1em 0 2em}figure img{max-width:100%;border:1px solid #ddd}figcaption{color:#444;font-size:.9em}
"""


def esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def to_html(title: str, blocks: list[Block]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{esc(title)}</title>", f"<style>{STYLE}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    for b in blocks:
        if isinstance(b, Heading):
            level = min(max(b.level, 2), 6)
            out.append(f"<h{level}>{esc(b.text)}</h{level}>")
        elif isinstance(b, Paragraph):
            out.append(f'<p class="note">{esc(b.text)}</p>' if b.note else f"<p>{esc(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            rows = ["<table>"]
            if b.caption:
                rows.append(f"<caption>{esc(b.caption)}</caption>")
            rows.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in b.header) + "</tr></thead><tbody>")
            for i, row in enumerate(b.rows):
                cls = ' class="paper"' if i in b.paper_rows else ""
                rows.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
            rows.append("</tbody></table>")
            out.append("".join(rows))
        elif isinstance(b, Figure):
            data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
            out.append(f'<figure><img alt="{esc(b.caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{esc(b.caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
