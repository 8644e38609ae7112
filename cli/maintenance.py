"""``rrstore check``: read and re-hash the store, report every damage, and (``--repair``) heal it.

Problems go to stdout, one a line (or one JSON document with ``--json``);
the summary goes to stderr. Exit 0 when the store is healthy (after the
repair, with ``--repair``), 13 when it is damaged.
"""

from __future__ import annotations

import click

from rrstore.errors import UsageError

from .context import endpoint_needs, global_options, remote_option, state
from .output import emit_json, info


def _percent(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        value = -1.0
    if not 0 < value <= 100:
        raise UsageError(f"invalid --read-data-subset {text!r}: give a percentage above 0 and at most 100, e.g. 10%")
    return value


@click.command(name="check")
@click.option("--read-data", is_flag=True,
              help="Also decompress and re-hash every content object the checkpoints reach.")
@click.option("--read-data-subset", "subset", metavar="N%",
              help="Like --read-data, for a fixed share of the packs (the same ones each run; rrstore help check).")
@click.option("--repair", is_flag=True,
              help="Rebuild pack indexes, the stat cache and config.json; with --from, replace damaged objects.")
@click.option("--from", "source", metavar="ARCHIVE|s3://BUCKET/PREFIX",
              help="With --repair: fetch damaged or missing objects from this archive or remote.")
@remote_option("Check what this remote's refs reach instead of the local store.")
@click.option("--endpoint-url", default=None, metavar="URL",
              help="S3 endpoint of a non-AWS server (with --remote or --from s3://).")
@global_options
def check_command(read_data: bool, subset: str | None, repair: bool, source: str | None,
                  remote: str | None, endpoint_url: str | None) -> int:
    """Walk refs, records, trees and file contents and report every problem with the checkpoints it affects.

    Damaged files are never deleted: --repair moves them to quarantine/ in the store.

    \b
    Examples:
      rrstore check --read-data-subset 10%
      rrstore check --repair --from backup.rra
    """
    st = state()
    if source and not repair:
        raise UsageError("--from needs --repair")
    if remote is not None and repair:
        raise UsageError("--repair works on the local store only; check --remote reads the remote")
    endpoint_needs(endpoint_url, (source or "").startswith("s3://") or remote is not None,
                   "--remote or --from s3://BUCKET/PREFIX")
    from rrstore.check import CheckOptions  # imported here: every other command starts without it

    options = CheckOptions(read_data=read_data, subset=_percent(subset), repair=repair, source=source,
                           endpoint_url=endpoint_url)
    result = (st.system().check_remote(remote or None, endpoint_url, options) if remote is not None
              else st.system().check(options))
    if st.json:
        emit_json(result.to_json())
    else:
        for action in result.repaired:
            click.echo(f"repaired: {action}")
        for problem in result.problems:
            click.echo(problem.line)
        for note in result.notes:
            click.echo(f"rrstore: warning: {note}", err=True)
        info(result.message, st.quiet and result.success)
    return result.exit_code
