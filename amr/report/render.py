"""The report's pages: sections of sentences, tables, figures and examples as Markdown and as one HTML page."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from amr.report.tables import Table

TITLE = "amr-evol report"
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:80em;padding:0 1.5em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}.lede{color:#555;margin-top:0}
h2{border-bottom:2px solid #e5e5e5;padding-bottom:.2em;margin-top:1.8em}
.answer{background:#f4f8ff;border-left:5px solid #4c72b0;padding:.6em 1.2em;margin:1em 0}
.answer li{margin:.3em 0;font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0 1.2em}
th,td{border:1px solid #d8d8d8;padding:.3em .6em;text-align:right}td{white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
figure{display:inline-block;margin:.5em 1.5em 1em 0;vertical-align:top}img{max-width:100%}
figcaption{color:#555;font-size:.9em}
.example{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:1em 0}
.example .grid{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:.8em}
.example h4{margin:.3em 0}pre{background:#f7f7f7;padding:.5em;overflow:auto;max-height:22em;font-size:.8em}
.passed{color:#1a7f37}.failed{color:#c0392b}.not-tested{color:#777}
.sim,.spec{color:#555;font-size:.85em}
"""


@dataclass
class Section:
    """One part of the report, rendered in this order: caption, sentences, tables, figures, examples."""

    title: str
    caption: str = ""
    sentences: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    """(PNG file name, what it shows)."""
    examples: list[dict[str, Any]] = field(default_factory=list)
    """``tables.examples`` rows."""
    lead: bool = False
    """The report's answer: set apart at the top."""


def markdown(sections: list[Section], lede: str) -> str:
    out = [f"# {TITLE}", "", lede, ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        out += [s.caption, ""] if s.caption else []
        out += [*(f"- {line}" for line in s.sentences), ""] if s.sentences else []
        for header, rows in filter(lambda t: t[1], s.tables):
            out += [
                "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header),
                *("| " + " | ".join(r) + " |" for r in rows),
                "",
            ]
        out += [f"![{alt}]({name})" for name, alt in s.figures] + ([""] if s.figures else [])
        for e in s.examples:
            out += [
                f"### {e['id']}",
                "",
                e["instruction"],
                "",
                f"**R_d (direct answer): {e['direct_verdict']}**",
                "",
                _fenced(e["direct_response"]),
                "",
                "**Specs:** " + ("; ".join(f"`{x['signature']}`" for x in e["specs"]) or (e["md_reason"] or "none")),
                "",
                "**Retrieved:** "
                + ("; ".join(f"`{x['name']}` ({x['similarity']:.2f})" for x in e["retrieved"]) or "nothing"),
                "",
                f"**AMR answer: {e['amr_verdict']}**",
                "",
                _fenced(_answer(e)),
                "",
            ]
    return "\n".join(out) + "\n"


def _fenced(text: str | None) -> str:
    return "````\n" + (text or "(none)").strip() + "\n````"


def _answer(example: dict[str, Any]) -> str | None:
    """The AMR method's dataset answer, or the evolved one where the dataset left the row out."""
    return example["response"] or example["are_response"]


def page(sections: list[Section], lede: str) -> str:
    """The report as one self-contained HTML page (its figures are the PNG files beside it)."""
    parts = [f"<h1>{TITLE}</h1><p class='lede'>{_e(lede)}</p>"]
    for s in sections:
        body = f"<h2>{_e(s.title)}</h2>" + (f"<p>{_e(s.caption)}</p>" if s.caption else "")
        if s.sentences:
            items = "".join(f"<li>{_e(line)}</li>" for line in s.sentences)
            body += f"<ul class='{'answer' if s.lead else ''}'>{items}</ul>"
        body += "".join(_table(*t) for t in s.tables if t[1])
        body += "".join(
            f'<figure><img src="{_e(name)}" alt="{_e(alt)}"><figcaption>{_e(alt)}</figcaption></figure>'
            for name, alt in s.figures
        )
        body += "".join(_example(e) for e in s.examples)
        parts.append(f"<section{' id=answer' if s.lead else ''}>{body}</section>")
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{TITLE}</title><style>{STYLE}</style>"
        f"</head><body>{''.join(parts)}</body></html>\n"
    )


def _e(text: str) -> str:
    return html.escape(str(text))


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _short(text: str | None, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters (a small teacher's descriptions can run on for pages)."""
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _verdict(word: str) -> str:
    return f"<span class='{word.replace(' ', '-')}'>{_e(word)}</span>"


def _example(e: dict[str, Any]) -> str:
    specs = "".join(
        f"<li><code>{_e(x['signature'])}</code><br><span class='spec'>{_e(_short(x.get('description')))}</span></li>"
        for x in e["specs"]
    )
    retrieved = "".join(
        f"<li><code>{_e(x['name'])}</code> <span class='sim'>similarity {x['similarity']:.2f}</span>"
        f"<pre>{_e(x['code'])}</pre></li>"
        for x in e["retrieved"]
    )
    columns = [
        f"<h4>R_d, the direct answer: {_verdict(e['direct_verdict'])}</h4><pre>{_e(e['direct_response'] or '')}</pre>",
        f"<h4>Specs</h4><ul>{specs}</ul>" if specs else f"<h4>Specs</h4><p>none: {_e(e['md_reason'] or '-')}</p>",
        f"<h4>Retrieved functions</h4><ul>{retrieved}</ul>" if retrieved else "<h4>Retrieved functions</h4><p>none</p>",
        f"<h4>AMR answer: {_verdict(e['amr_verdict'])}</h4><pre>{_e(_answer(e) or '')}</pre>",
    ]
    grid = "".join(f"<div>{c}</div>" for c in columns)
    return (
        f"<div class='example'><h3>{_e(e['id'])}</h3><p>{_e(e['instruction'])}</p><div class='grid'>{grid}</div></div>"
    )
