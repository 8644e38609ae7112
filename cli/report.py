"""``rrstore report``: the store's workflow runs, growth and one diff as HTML, markdown or JSON.

Builds the report with ``rrstore.report.build_report`` and renders it; the
files are written whole or not at all. Data goes to stdout (markdown or
JSON), messages to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rrstore.errors import CheckpointsUnreadable, UsageError
from rrstore.lanes import LANES

from .context import global_options, state
from .output import emit_json, info

STDOUT = "-"


@click.command(name="report")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write a self-contained HTML page (inline CSS and SVG; it loads nothing).")
@click.option("--markdown", "markdown_file", is_flag=False, flag_value=STDOUT, default=None, metavar="[FILE]",
              help="Write markdown for a CI summary to FILE (replacing it), or to stdout without one (or with -).")
@click.option("--diff", "diff_ids", nargs=2, metavar="ID", default=None,
              help="Add the diff of two checkpoints: --diff OLD NEW (ids or 'latest'; as 'rrstore diff OLD NEW').")
@click.option("--lane", type=click.Choice(LANES), default=None, help="Only this lane's runs.")
@click.option("--runs", type=click.IntRange(min=0), default=10, show_default=True,
              help="The newest runs shown per lane.")
@global_options
def report_command(html_file: Path | None, markdown_file: str | None, diff_ids: tuple[str, str] | None,
                   lane: str | None, runs: int) -> int:
    """Report the workflow runs per lane (each step a bar: duration, status; failures with their
    classification and plan), store size and dedup over time, and a diff of two checkpoints.

    Without --html or --markdown, prints the markdown. --json prints the
    report's data instead (with --html, as well as writing the page).

    \b
    Examples:
      rrstore report --html report.html --diff standard-step1-20261201_101500-ab3d5f latest
      rrstore report --markdown --runs 1 >> "$GITHUB_STEP_SUMMARY"
    """
    from rrstore.report import ReportOptions, build_report, render_html, render_markdown, write_text

    st = state()
    if st.json and markdown_file == STDOUT:
        raise UsageError("--json and --markdown both print on stdout: give --markdown a FILE")
    data = build_report(st.system(), ReportOptions(lane, runs, diff_ids))
    if html_file is not None:
        write_text(html_file, render_html(data))
        info(f"rrstore: wrote the HTML report to {html_file}", st.quiet)
    if markdown_file is None and html_file is None and not st.json:
        markdown_file = STDOUT
    if markdown_file == STDOUT:
        click.echo(render_markdown(data), nl=False)
    elif markdown_file is not None:
        write_text(Path(markdown_file), render_markdown(data))
        info(f"rrstore: wrote the markdown report to {markdown_file}", st.quiet)
    if st.json:
        emit_json(data.to_json())
    else:  # with --json the error object at the end carries each id and its error
        for checkpoint_id, exc in data.damage.items():
            click.echo(f"rrstore: warning: cannot read checkpoint {checkpoint_id}: {exc}", err=True)
    sys.stdout.flush()
    if data.damage:  # reported without them, as 'rrstore list' lists the readable ones
        raise CheckpointsUnreadable(data.damage)
    return 0
