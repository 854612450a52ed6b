"""Renderers of the report: the terminal tables, and the document's blocks as HTML, Markdown and LaTeX.

The HTML is one self-contained page (inline CSS, figures as data URIs, no scripts, no network); the Markdown
links the PNG files; the LaTeX holds every table (booktabs).
"""

from __future__ import annotations

import base64
import html
import re
from typing import Any

import pandas as pd

from grid.report.blocks import CORNER, Block, Table, metric_title, slug
from grid.report.results import Results, axis_names
from grid.report.sections import kind_sections
from grid.report.sections.jobs import job_status
from grid.report.sections.matrices import incomplete_cells, matrix_text


# -------------------------------------------------------------------------------------------------- terminal
def _text_table(frame: pd.DataFrame, corner: str) -> str:
    """Plain-text table with aligned columns (index as first column)."""
    header = [corner, *[str(c) for c in frame.columns]]
    body = [[str(i), *[str(v) for v in row]] for i, row in zip(frame.index, frame.to_numpy())]
    widths = [max(len(r[k]) for r in [header, *body]) for k in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in body]
    return "\n".join(lines)


def format_matrices(res: Results,
                    metrics: tuple[str, ...] = ("accuracy",), digits: int = 3) -> str:
    """The terminal table of mean ± std (ddof=1) over seeds per model: rows trained on, columns tested on.

    Cells with fewer seeds than planned carry † and are listed under the table; cells with no data show —.
    """
    if not res.models:
        return "No accuracy results stored yet."
    parts = []
    for metric in metrics:
        n = len(res.seeds)
        title = metric_title(metric, axis_names(res, "target"))
        parts.append(f"{title}: mean ± std over {n} seed{'s' if n != 1 else ''} "
                     f"(rows: trained on, columns: tested on)")
        for model in res.models:
            parts.append("")
            parts.append(f"[{model}]")
            parts.append(_text_table(matrix_text(res, model, metric, digits), CORNER))
            for line in incomplete_cells(res, metric, model):
                parts.append(f"  † {line}")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def render_text(blocks: list[Block]) -> str:
    """Blocks as plain text for the terminal: headings and paragraphs as lines, tables aligned with their caption
    above (the index shown only when named), figures left out."""
    parts = []
    for kind, content in blocks:
        if kind == "table":
            frame = content.frame if content.index_name is not None else content.frame.set_index(
                content.frame.columns[0])
            corner = content.index_name if content.index_name is not None else str(content.frame.columns[0])
            parts += [f"{content.caption}:", _text_table(frame, corner), *[f"  {n}" for n in content.notes], ""]
        elif kind in ("h1", "h2", "h3", "p", "note", "pre"):
            parts += [str(content), ""]
    return "\n".join(parts).rstrip() + "\n" if parts else ""


def format_sections(res: Results) -> str:
    """What the kinds' sections print in the terminal (``Section.terminal``); "" when none has anything."""
    return "".join(render_text(section.terminal(res)) for section in kind_sections() if section.terminal)


def format_status(res: Results, limit: int = 10) -> str:
    """One line of job counts, then up to ``limit`` failed and missing jobs (with the error's first line)."""
    status = job_status(res)
    if status.empty:
        return "jobs: no plan in run.json and no ledger records"
    counts = status["status"].value_counts()
    line = (f"jobs: {int(counts.get('done', 0))} done, {int(counts.get('failed', 0))} failed, "
            f"{int(counts.get('missing', 0))} missing"
            + (f", {int(counts.get('damaged', 0))} damaged" if counts.get("damaged", 0) else "")
            + f" (of {len(status)})")
    lines = [line]
    bad = status[status["status"] != "done"]
    for row in bad.head(limit).itertuples():
        error = (row.error or "").strip().splitlines()
        lines.append(f"  {row.status:7s} {row.description}" + (f": {error[-1][:160]}" if error else ""))
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more (see the report)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- renderers
def _html_table(t: Table) -> str:
    head = ([html.escape(t.index_name)] if t.index_name is not None else []) + \
        [html.escape(str(c)) for c in t.frame.columns]
    rows = []
    for idx, row in zip(t.frame.index, t.frame.to_numpy()):
        cells = ([f"<th>{html.escape(str(idx))}</th>"] if t.index_name is not None else []) + \
            [f"<td>{html.escape(str(v))}</td>" for v in row]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f'<p class="fn">{html.escape(n)}</p>' for n in t.notes)
    return (f'<div class="tbl"><table><caption>{html.escape(t.caption)}</caption><thead><tr>'
            + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>" + "".join(rows)
            + f"</tbody></table>{notes}</div>")


CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #0072B2;padding-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ccc}
nav{background:#f6f8fa;padding:.5em 1em;border-radius:6px}nav a{margin-right:1.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #d0d7de;padding:.25em .6em;text-align:left;vertical-align:top}
thead th{background:#f0f3f6}tbody tr:nth-child(even){background:#fafbfc}td{font-variant-numeric:tabular-nums}
.tbl{overflow-x:auto}.fn{font-size:.85em;color:#555;margin:.1em 0}
.note{background:#fff4e5;border-left:4px solid #E69F00;padding:.5em 1em;margin:.8em 0}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}pre{background:#f6f8fa;padding:1em;overflow-x:auto;font-size:.8em}
"""


def render_html(blocks: list[Block]) -> str:
    """One self-contained HTML page: inline CSS, images as base64 data URIs, no scripts, no network."""
    body, nav = [], []
    title = "biasgrid report"
    for kind, content in blocks:
        if kind == "h1":
            title = content
            body.append(f"<h1>{html.escape(content)}</h1>")
        elif kind == "h2":
            anchor = slug(content.lower())
            nav.append(f'<a href="#{anchor}">{html.escape(content)}</a>')
            body.append(f'<h2 id="{anchor}">{html.escape(content)}</h2>')
        elif kind == "h3":
            body.append(f"<h3>{html.escape(content)}</h3>")
        elif kind == "p":
            body.append(f"<p>{html.escape(content)}</p>")
        elif kind == "note":
            body.append(f'<div class="note">{html.escape(content)}</div>')
        elif kind == "pre":
            body.append(f"<details open><summary>Resolved configuration (run.json)</summary>"
                        f"<pre>{html.escape(content)}</pre></details>")
        elif kind == "table":
            body.append(_html_table(content))
        elif kind == "figure":
            data = base64.b64encode(content.png).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(content.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(content.caption)}</figcaption></figure>")
    if body and body[0].startswith("<h1>"):
        body.insert(1, "<nav>" + "".join(nav) + "</nav>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


_MD_SPECIALS = re.compile(r"([\\`*|])")


def _md(v: Any) -> str:
    """Text as Markdown that shows it literally, on one line: HTML special characters as entities (no raw HTML
    reaches a renderer that passes HTML through), a backslash before the characters that would start code or
    emphasis or split a table cell (backslash, backtick, *, |), and no link syntax (``](`` and a leading ``[``
    escaped; intervals such as ``[0.1, 0.2]`` stay as they are)."""
    text = _MD_SPECIALS.sub(r"\\\1", html.escape(str(v), quote=False)).replace("\n", " ").replace("](", "]\\(")
    return "\\" + text if text.startswith("[") else text


def _md_table(t: Table) -> str:
    head = ([t.index_name or ""] if t.index_name is not None else []) + [str(c) for c in t.frame.columns]
    lines = [f"**{_md(t.caption)}**", "", "| " + " | ".join(_md(h) for h in head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    for idx, row in zip(t.frame.index, t.frame.to_numpy()):
        cells = ([str(idx)] if t.index_name is not None else []) + [str(v) for v in row]
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    lines += ["", *[f"{_md(n)}  " for n in t.notes]]
    return "\n".join(lines).rstrip()


def render_markdown(blocks: list[Block], figure_dir: str = "figures") -> str:
    """The report as Markdown; figures are links to the PNG files under ``figure_dir``. Every text is escaped
    (:func:`_md`); the config (JSON) is a fenced block longer than any run of backticks in it, with &, <, > written
    as JSON escapes (\\u0026, \\u003c, \\u003e: the same JSON, and no raw HTML anywhere in the file)."""
    out = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + _md(content))
        elif kind == "p":
            out.append(_md(content))
        elif kind == "note":
            out.append(f"> **Note:** {_md(content)}")
        elif kind == "pre":
            fence = "`" * max(3, 1 + max((len(r) for r in re.findall("`+", content)), default=0))
            safe = content.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")  # same JSON
            out.append(f"{fence}json\n{safe}\n{fence}")
        elif kind == "table":
            out.append(_md_table(content))
        elif kind == "figure":
            out.append(f"![{_md(content.caption)}]({figure_dir}/{content.name})")
    return "\n\n".join(out) + "\n"


_LATEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "±": r"$\pm$", "†": r"$^\dagger$", "—": "---", "−": "$-$", "→": r"$\to$",
                 "<": r"$<$", ">": r"$>$"}


def _tex(text: Any) -> str:
    return "".join(_LATEX_ESCAPE.get(ch, ch) for ch in str(text))


def latex_table(t: Table, label: str) -> str:
    """A booktabs LaTeX table (needs \\usepackage{booktabs})."""
    head = ([t.index_name or ""] if t.index_name is not None else []) + [str(c) for c in t.frame.columns]
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{_tex(t.caption)}}}", rf"\label{{tab:{label}}}",
             r"\begin{tabular}{" + "l" * len(head) + "}", r"\toprule",
             " & ".join(_tex(h) for h in head) + r" \\", r"\midrule"]
    for idx, row in zip(t.frame.index, t.frame.to_numpy()):
        cells = ([str(idx)] if t.index_name is not None else []) + [str(v) for v in row]
        lines.append(" & ".join(_tex(c) for c in cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if t.notes:
        lines.append(r"\par\smallskip{\footnotesize " + r"\\ ".join(_tex(n) for n in t.notes) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines)


def render_latex(blocks: list[Block]) -> str:
    """Every table of the report as LaTeX (booktabs), one table environment each."""
    out = ["% biasgrid report tables; needs \\usepackage{booktabs}", ""]
    k = 0
    for kind, content in blocks:
        if kind == "table":
            k += 1
            out += [latex_table(content, f"biasgrid-{k}-{slug(content.caption.lower())[:40]}"), ""]
    return "\n".join(out)
