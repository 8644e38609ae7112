"""``rrstore help``: the reference (docs/*.md) as installed with the package, by command or topic.

One source: ``docs/`` is the reference, and ``cli/docs`` is a symlink to it,
shipped as package data (``rrstore/cli/docs/*.md`` in the wheel), so what
``--help`` points to is on every machine rrstore is installed on. The
sections are found by their Markdown headings; a command's section is the
one the command list at the top of cli.md links it to (``push`` and ``pull``
share one), else the heading with its name, else a document of that name
(``gc``). Its JSON shape is the part of the section from the paragraph that
introduces ``--json`` on, with the sections that paragraph links to (``show``
prints "a checkpoint record, see checkpoint").
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

import click

from rrstore.errors import UsageError

from .context import global_options

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_LINK = re.compile(r"\[([^\]]+)\]\(([\w-]*\.md)?(?:#([\w-]+))?\)")  # [text](doc.md#anchor), either part
_JSON_INTRO = re.compile(r"`--json`(?:[^.\n]{0,20}\bprints\b| adds| has|:|\s*$)", re.M)


@dataclass(frozen=True)
class Section:
    """One heading of a document: its level, title, GitHub anchor and text (subsections included)."""

    level: int
    title: str
    anchor: str
    text: str


@functools.cache
def documents() -> dict[str, str]:
    """The shipped documents by name (``cli`` for cli.md), read from the installed package (once)."""
    folder = resources.files(__package__ or "rrstore.cli").joinpath("docs")
    return {entry.name[:-3]: entry.read_text(encoding="utf-8") for entry in sorted(folder.iterdir(),
            key=lambda e: e.name) if entry.name.endswith(".md")}


def anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def sections(text: str) -> list[Section]:
    """Every heading outside code fences, with the text up to the next heading of its level or above."""
    lines = text.splitlines()
    heads: list[tuple[int, int, str]] = []
    fenced = False
    for number, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            heads.append((number, len(match.group(1)), match.group(2)))
    found = []
    for i, (start, level, title) in enumerate(heads):
        end = next((n for n, lv, _ in heads[i + 1:] if lv <= level), len(lines))
        found.append(Section(level, title, anchor(title), "\n".join(lines[start:end]).strip("\n-\t ") + "\n"))
    return found


def command_links(text: str) -> dict[str, tuple[str, str]]:
    """Command name -> (document, anchor; "" for its top), from the ``Commands:`` paragraph of cli.md."""
    start = text.find("\nCommands:")
    paragraph = text[start:text.find("\n\n", start + 1)] if start >= 0 else ""
    names: dict[str, tuple[str, str]] = {}
    for label, doc, target in _LINK.findall(paragraph.replace("\n", " ")):
        for name in re.findall(r"`([a-z][a-z-]*)`", label):
            names[name] = (doc.removesuffix(".md") or "cli", target)
    return names


def command_section(name: str) -> Section | None:
    """The reference section of command ``name`` (see the module docstring), or None."""
    docs = documents()
    doc, target = command_links(docs.get("cli", "")).get(name, ("cli", name))
    found = sections(docs.get(doc, ""))
    if not target:
        return found[0] if found else None
    by_anchor = {s.anchor: s for s in found}
    if target in by_anchor:
        return by_anchor[target]
    if name in docs:
        return next(iter(sections(docs[name])), None)
    return None


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, a code fence kept in one block."""
    blocks: list[str] = []
    current: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not line.strip() and not fenced:
            if current:
                blocks.append("\n".join(current))
            current = []
        else:
            current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


def json_part(section: Section, follow: bool = True) -> str | None:
    """The section from the paragraph that introduces its ``--json`` output on (None: it has none),
    followed (``follow``) by the JSON parts of the sections that paragraph links to."""
    blocks = paragraphs(section.text)
    first = next((i for i, b in enumerate(blocks) if not b.startswith(("```", "|")) and _JSON_INTRO.search(b)),
                 None)
    if first is None or not follow:
        return None if first is None else "\n\n".join(blocks[first:]) + "\n"
    part = "\n\n".join(blocks[first:]) + "\n"
    by_anchor = {s.anchor: s for s in sections(documents().get("cli", ""))}
    for _, doc, target in _LINK.findall(blocks[first].replace("\n", " ")):
        linked = None if doc else by_anchor.get(target)
        if linked is not None and linked.anchor != section.anchor:
            more = json_part(linked, follow=False) or linked.text
            part += f"\n--- {linked.title} (linked above) ---\n\n{more}"
    return part


def _commands() -> list[str]:
    group = click.get_current_context().find_root().command
    return group.list_commands(click.get_current_context()) if isinstance(group, click.Group) else []


def _topics() -> str:
    docs = documents()
    names = [s.anchor for s in sections(docs.get("cli", "")) if s.level == 2 and s.anchor not in _commands()]
    return (f"Commands: {', '.join(_commands())}\n"
            f"Topics of cli.md: {', '.join(names)}\n"
            f"Documents: {', '.join(docs)}\n"
            "rrstore help NAME prints one; rrstore help json [COMMAND] prints a command's --json shapes.")


def _json_index() -> str:
    by_anchor = {s.anchor: s for s in sections(documents().get("cli", ""))}
    conventions = by_anchor.get("json-conventions")
    with_json = [c for c in _commands() if (s := command_section(c)) is not None and json_part(s) is not None]
    return ((conventions.text if conventions else "") +
            f"\nCommands with --json output (rrstore help json COMMAND): {', '.join(with_json)}\n")


def topic_text(name: str) -> str:
    """What ``rrstore help NAME`` prints: a command's section, a cli.md topic, or a whole document."""
    docs = documents()
    section = command_section(name) if name in _commands() else None
    if section is None:
        section = next((s for s in sections(docs.get("cli", "")) if s.anchor == name), None)
    if section is not None:
        return section.text
    if name in docs:
        return docs[name]
    raise UsageError(f"no help topic {name!r}: rrstore help lists them")


@click.command(name="help")
@click.argument("topic", required=False, metavar="[COMMAND|TOPIC|json [COMMAND]]")
@click.argument("command", required=False, metavar="")
@global_options
def help_command(topic: str | None, command: str | None) -> int:
    """Print the reference installed with rrstore: a command's section, a topic, or JSON shapes.

    'rrstore help' lists what there is; 'rrstore help json COMMAND' prints
    the --json output of COMMAND, 'rrstore help exit-codes' the exit codes.

    \b
    Examples:
      rrstore help json show
      rrstore help restore | less
    """
    if topic is None:
        text = _topics() + "\n"
    elif topic == "json" and command is None:
        text = _json_index()
    elif topic == "json":
        section = command_section(command) if command in _commands() else None
        if section is None:
            raise UsageError(f"no command {command!r}: rrstore help lists the commands")
        text = json_part(section) or f"rrstore {command} has no --json output.\n"
    elif command is not None:
        raise UsageError(f"rrstore help takes one name (or json COMMAND), got {topic!r} {command!r}")
    else:
        text = topic_text(topic)
    click.echo(text, nl=False)
    return 0
