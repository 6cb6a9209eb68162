"""The leaderboard as text people read outside a terminal: markdown (a CI job summary) and one
self-contained HTML page (no scripts, no external files; tables scroll instead of overflowing).

Both take the :class:`~reca_eval.results.leaderboard.FormattedTable` list the terminal form uses, so
the three show the same numbers, the same best-of-column marks and the same notes.
"""

from __future__ import annotations

import html

from reca_eval.results.leaderboard import FormattedTable


def _md_cell(text: str) -> str:
    # A pipe ends a markdown cell, a newline the row; brackets and backticks would turn a label into a
    # link or code.
    return (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("`", "\\`")
        .replace("[", "\\[")
        .replace("]", "\\]")
        .replace("\n", " ")
    )


def leaderboard_markdown(tables: list[FormattedTable]) -> str:
    """One GitHub-flavoured markdown table per comparable group; the best score of a column in bold."""
    if not tables:
        return "No result records found.\n"
    parts = []
    for f in tables:
        lines = [f"### {_md_cell(f.table.name)}", ""]
        lines.append("| model | " + " | ".join(_md_cell(c) for c in f.categories) + " |")
        lines.append("|---|" + "---:|" * len(f.categories))
        for name, row in f.cells.items():
            cells = [f"**{_md_cell(text)}**" if best else _md_cell(text) for text, best in row]
            lines.append(f"| {_md_cell(str(name))} | " + " | ".join(cells) + " |")
        if f.notes:
            lines.append("")
            lines.extend(f"_{_md_cell(note)}_  " for note in f.notes)
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1b1b1b; max-width: 100%; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.7rem; white-space: nowrap; }
th { background: #f4f4f4; text-align: right; } th:first-child, td:first-child { text-align: left; }
td { text-align: right; } td.best { font-weight: bold; }
p.note { color: #555; font-size: 0.9rem; margin: 0.2rem 0; }
"""


def leaderboard_html(tables: list[FormattedTable], title: str = "reca-eval leaderboard") -> str:
    """A self-contained HTML page: one table per comparable group, ± intervals when they were computed."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    if not tables:
        body.append("<p>No result records found.</p>")
    for f in tables:
        body.append(f"<h2>{html.escape(f.table.name)}</h2>")
        head = "".join(f"<th>{html.escape(c)}</th>" for c in ["model", *f.categories])
        rows = []
        for name, row in f.cells.items():
            cells = "".join(
                f'<td class="best">{html.escape(text)}</td>' if best else f"<td>{html.escape(text)}</td>"
                for text, best in row
            )
            rows.append(f"<tr><td>{html.escape(str(name))}</td>{cells}</tr>")
        body.append(
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
        )
        body.extend(f'<p class="note">{html.escape(note)}</p>' for note in f.notes)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def check_markdown(result) -> str:
    """The `check` verdict of one benchmark as markdown: the rule, then a row per category."""
    comparison = result.comparison
    benchmark = comparison.record_a.benchmark
    status = "PASS" if result.passed else f"FAIL ({len(result.failing)} regressed)"
    level = f"{100 * (1 - comparison.alpha):.0f}% CI"
    lines = [
        f"### check {_md_cell(benchmark)}: {status}",
        "",
        f"Rule: {_md_cell(result.rule)}.",
        "",
        f"| category | baseline | run | Δ | {level} | allowed drop | verdict |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for key, v in result.verdicts.items():
        d = v.delta
        verdict = f"**{v.verdict}**" if v.failed else v.verdict
        lines.append(
            f"| {_md_cell(key)} | {d.a:.3f} | {d.b:.3f} | {d.delta:+.3f} | "
            f"\\[{d.low:+.3f}, {d.high:+.3f}\\] | {v.allowed_drop:.3g} | {verdict} |"
        )
    return "\n".join(lines) + "\n"
