"""``rrstore stats``: what the store's checkpoints hold and what they cost on disk (``rrstore.stats``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .context import global_options, state
from .output import emit_json, human_bytes

if TYPE_CHECKING:
    from rrstore.stats import StoreStats


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "none"


def render(result: StoreStats) -> list[str]:
    """The text of ``stats``: a summary, then the tables (biggest files and directories, growth)."""
    usage = result.usage
    lanes = {name: lane.checkpoints for name, lane in result.lanes.items()}
    lines = [
        f"store        {result.store}",
        f"checkpoints  {result.checkpoints} ({_counts(lanes)}; {_counts(result.kinds)}; {result.pinned} pinned)",
        f"logical      {human_bytes(result.logical_bytes)} in {result.files} files, over every checkpoint",
        f"unique       {human_bytes(result.unique_bytes)} in {result.unique_files} distinct contents "
        f"(dedup {_ratio(result.dedup_ratio)})",
        f"stored       {human_bytes(result.stored_bytes)} in objects/ and packs/ (compression "
        f"{_ratio(result.compression_ratio)}); {human_bytes(result.stored_bytes - result.referenced_bytes)} "
        "reached by no checkpoint (pack indexes, and what the next gc frees)",
        "on disk      " + ", ".join(f"{name} {human_bytes(u.disk)}" for name, u in usage.items())
        + f"; total {human_bytes(result.total.disk)} (as du counts)",
    ]
    if result.biggest_files:
        lines += ["", "biggest files (distinct contents):"]
        lines += [f"  {human_bytes(f.size):>10}  {f.hash[:12]}  {f.path}  ({len(f.checkpoints)} checkpoint(s), "
                  f"newest {f.checkpoints[0] if f.checkpoints else '-'})" for f in result.biggest_files]
    if result.biggest_dirs:
        lines += ["", f"biggest directories of {result.biggest_dirs_of}:"]
        lines += [f"  {human_bytes(size):>10}  {files:>7} file(s)  {path}/"
                  for path, size, files in result.biggest_dirs]
    if result.growth:
        lines += ["", "growth per day (UTC; stored bytes first reached by that day's checkpoints):"]
        lines += [f"  {d.day}  {d.checkpoints:>5} checkpoint(s)  {d.objects:>7} objects  "
                  f"{human_bytes(d.stored_bytes):>10}" for d in result.growth]
    damage = [f"damaged checkpoint {i}: {why}" for i, why in result.damaged_checkpoints.items()]
    damage += [f"damaged object: {b.kind} {b.oid}: {b.reason} (affected checkpoints: {', '.join(b.checkpoints)})"
               for b in result.damaged_objects]
    return lines + (["", *damage] if damage else [])


@click.command(name="stats")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="How many biggest files and directories to name.")
@global_options
def stats_command(top: int) -> int:
    """Checkpoints per lane, logical and stored sizes, dedup and compression, biggest files, growth per day.

    Counts every checkpoint of the store (all projects). Damaged checkpoints
    and objects are counted and named; the figures then cover what can be
    read, and the exit code is 13.

    \b
    Examples:
      rrstore stats
      rrstore stats --json --top 3 | jq .dedup_ratio
    """
    from rrstore.errors import UNREADABLE_WAY_OUT, RRStoreError, StoreDamaged

    st = state()
    result = st.system().stats(top=top)
    if st.json:
        emit_json(result.to_json())
    else:
        click.echo("\n".join(render(result)))
    if not result.success:
        named = [*result.damaged_checkpoints, *(b.oid for b in result.damaged_objects)]
        raise StoreDamaged("stats counted what can be read", RRStoreError(
            f"{len(result.damaged_checkpoints)} checkpoint(s) cannot be read and {len(result.damaged_objects)} "
            f"object(s) are missing or corrupt ({', '.join(named)}); {UNREADABLE_WAY_OUT}, or delete them"))
    return 0
