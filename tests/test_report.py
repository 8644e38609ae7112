"""``rrstore report``: a real three-step workflow run in a real git repository, reported as HTML,
markdown and JSON, the page rendered by a real headless chromium (Debian's ``/usr/bin/chromium``).

The workflow's steps 1 and 2 pass, step 3 fails as pytest does; a one-off
``rrstore run`` step in the docs lane carries a hostile name and evidence
(``<script>``, an ``<img onerror>``, quotes), as a shared or imported store may.
The rendered DOM (``--dump-dom``) is read with ``html.parser``; chromium's
console (``--enable-logging=stderr``) must stay silent, and the check is
shown to catch an injected error; ``--screenshot`` must give a PNG of the
window's size with the bars' colours in it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import git, one_error_line, run_cli, system_tool

from rrstore.report.text import printable

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HOSTILE = """<script>alert("x")</script> & "q" 'o'"""
EVIDENCE = "ERROR tests/t.py::t - <img src=x onerror=alert(1)>"
TOML = """[recovery]
retries = 0

[workflow.standard]
steps = [
  { name = "build", command = "sleep 0.3; echo built > out.txt" },
  { name = "lint", command = "sleep 0.1; echo linted > lint.txt" },
  { name = "tests", command = "echo 'FAILED tests/test_a.py::test_x - assert 1 == 2'; exit 1" },
]
"""
# A real CI's run id must not group these runs (an empty value names no run).
OUTSIDE_CI = dict.fromkeys(("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "CI_PIPELINE_ID", "CI_JOB_ID"), "")
Stack = list[tuple[str, dict[str, str]]]  # the elements enclosing one, outermost first
VOID = {"meta", "br", "hr", "img", "input", "link", "base", "col", "area", "source", "wbr"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository whose store holds one failed three-step workflow run and one hostile step."""
    root = new_repo(tmp_path_factory.mktemp("report"), TOML)
    ran = run_cli("workflow", "--lane", "standard", cwd=root, env=OUTSIDE_CI)
    assert ran.returncode == 1, ran.stderr
    one = run_cli("run", "--lane", "docs", "--step-number", "1", "--step-name", HOSTILE, "--",
                  "sh", "-c", f"echo '{EVIDENCE}'; exit 1", cwd=root, env=OUTSIDE_CI)
    assert one.returncode == 1, one.stderr
    return root


def new_repo(parent: Path, toml: str) -> Path:
    root = parent / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("# demo\n")
    (root / "rrstore.toml").write_text(toml)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def records(root: Path) -> list[dict]:  # type: ignore[type-arg]
    listed = run_cli("--json", "list", cwd=root)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)  # type: ignore[no-any-return]


def workflow_ids(root: Path) -> list[str]:
    """The workflow's step checkpoints, step 1 first."""
    return [r["checkpoint_id"] for r in sorted(records(root), key=lambda r: r["step_number"])
            if r["lane"] == "standard"]


@pytest.fixture(scope="module")
def page(repo: Path) -> Path:
    first, _, last = workflow_ids(repo)
    out = repo.parent / "report.html"
    made = run_cli("report", "--html", str(out), "--diff", first, last, cwd=repo)
    assert made.returncode == 0, made.stderr
    assert made.stdout == ""
    return out


# chromium -------------------------------------------------------------------------------------------

def chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless chromium on ``page`` with its own profile and no network at all (every host name
    resolves to nothing), killed with its whole process group when done or after 90 s."""
    system_tool("chromium")
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
               "--no-first-run", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
               "--enable-logging=stderr", "--v=0", *args, page.as_uri()]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its renderer and helpers too
        proc.wait()
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def console_errors(stderr: str) -> list[str]:
    """Chromium's console lines (``INFO:CONSOLE``: uncaught errors, console.error, refused loads and
    CSP refusals alike; the page has no script, so any line at all is an error)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


class Dom(HTMLParser):
    """Elements of a page with their attributes, the chain of enclosing elements, and all text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str], Stack]] = []
        self.stack: Stack = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.elements.append((tag, found, list(self.stack)))
        if tag not in VOID:
            self.stack.append((tag, found))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, list(self.stack)))

    def handle_endtag(self, tag: str) -> None:
        for at in range(len(self.stack) - 1, -1, -1):
            if self.stack[at][0] == tag:
                del self.stack[at:]
                break

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, css_class: str | None = None) -> list[tuple[dict[str, str], Stack]]:
        return [(a, s) for t, a, s in self.elements
                if t == tag and (css_class is None or css_class in a.get("class", "").split())]


def parse(text: str) -> Dom:
    dom = Dom()
    dom.feed(text)
    dom.close()
    return dom


def step_bars(dom: Dom, lane: str) -> list[dict[str, str]]:
    return [a for a, stack in dom.find("rect", "step-bar")
            if any(t == "section" and s.get("data-lane") == lane for t, s in stack)]


def test_the_page_renders_in_headless_chromium_with_one_bar_per_step_and_no_console_error(
        repo: Path, page: Path, tmp_path: Path) -> None:
    shown = chromium(page, tmp_path, "--dump-dom")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert console_errors(shown.stderr) == []
    dom = parse(shown.stdout)
    bars = step_bars(dom, "standard")
    ids = workflow_ids(repo)
    assert [b["data-step"] for b in bars] == ["1", "2", "3"]
    assert [b["data-status"] for b in bars] == ["passed", "passed", "failed"]
    assert [b["data-checkpoint"] for b in bars] == ids
    widths = [float(b["width"]) for b in bars]
    assert widths[0] > widths[1] > 0  # build slept 0.3 s, lint 0.1 s: the bars are as long as they ran
    runs = [a for a, _ in dom.find("article", "run") if a.get("data-status") == "failed"]
    assert len(runs) == 2  # the workflow run and the docs step
    text = " ".join(dom.text)
    assert "test_failure" in text and "Recovery plan: MANUAL" in text
    # the hostile name is text in the rendered page: no element came of it
    assert HOSTILE in text and EVIDENCE in text
    assert not dom.find("script") and not dom.find("img")
    assert all(not k.startswith("on") for _, a, _ in dom.elements for k in a)


def test_the_console_check_catches_an_injected_error(page: Path, tmp_path: Path) -> None:
    """The page's own policy refuses an injected script (a console line); without the policy the
    script's uncaught error is one: either way the check above would have failed."""
    original = page.read_text()
    injected = tmp_path / "injected.html"
    injected.write_text(original.replace("</main>", '<script>throw new Error("injected")</script></main>'))
    refused = chromium(injected, tmp_path, "--dump-dom")
    assert any("Content Security Policy" in line for line in console_errors(refused.stderr)), refused.stderr
    open_page = tmp_path / "no-policy.html"
    open_page.write_text(injected.read_text().replace('http-equiv="Content-Security-Policy"', 'name="x"'))
    thrown = chromium(open_page, tmp_path, "--dump-dom")
    assert any("Uncaught Error: injected" in line for line in console_errors(thrown.stderr)), thrown.stderr


def test_a_screenshot_is_a_png_of_the_window_with_the_bars_in_it(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    taken = chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1200,900", "--hide-scrollbars",
                     "--run-all-compositor-stages-before-draw", "--virtual-time-budget=10000")
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    width, height, pixels = read_png(shot.read_bytes())
    assert (width, height) == (1200, 900)
    colours = set(pixels)
    assert len(colours) > 50  # not one flat colour: text, bars, tables
    for bar in ((0x2E, 0x7D, 0x32), (0xC6, 0x28, 0x28)):  # a passed and a failed step's bar
        assert any(all(abs(c - b) <= 3 for c, b in zip(colour, bar, strict=True)) for colour in colours), bar


def read_png(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Width, height and the pixels of an 8-bit RGB or RGBA non-interlaced PNG (as chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + size]
        pos += 12 + size
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(bytes(idat)), width * bpp
    prev, rows = bytearray(stride), []
    for y in range(height):
        kind, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        unfilter(kind, row, prev, bpp)
        rows.append(row)
        prev = row
    pixels = [tuple(row[x:x + 3]) for row in rows for x in range(0, stride, bpp)]
    return width, height, pixels


def unfilter(kind: int, row: bytearray, prev: bytearray, bpp: int) -> None:
    """PNG's five row filters, undone in place."""
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
        if kind == 1:
            row[i] = (row[i] + left) & 255
        elif kind == 2:
            row[i] = (row[i] + up) & 255
        elif kind == 3:
            row[i] = (row[i] + (left + up) // 2) & 255
        elif kind == 4:
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            row[i] = (row[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255


# parsed without a browser ---------------------------------------------------------------------------

def test_the_page_is_self_contained_and_escapes_every_name(page: Path) -> None:
    text = page.read_text()
    dom = parse(text)
    for tag, attrs, _ in dom.elements:
        assert tag not in ("script", "link", "img", "iframe", "object", "embed", "base"), tag
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            if name in ("href", "src", "xlink:href", "action", "srcset", "poster"):
                assert value.startswith("#"), (tag, name, value)
    lowered = text.lower()
    for marker in ("http://", "https://", "url(", "@import", "//fonts", "<script"):
        assert marker not in lowered.replace("http-equiv", ""), marker
    policy = [a["content"] for a, _ in dom.find("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert policy and policy[0].startswith("default-src 'none'")
    joined = "".join(dom.text)
    assert HOSTILE in joined and EVIDENCE in joined  # as text, once the entities are read
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    bars = step_bars(dom, "docs")
    assert len(bars) == 1 and bars[0]["data-status"] == "failed"


def test_json_holds_the_runs_steps_durations_failures_and_plans(repo: Path) -> None:
    made = run_cli("--json", "report", cwd=repo)
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    (run,) = doc["lanes"]["standard"]
    by_id = {r["checkpoint_id"]: r for r in records(repo)}
    assert run["status"] == "failed" and run["run_id"] == by_id[run["steps"][0]["checkpoint_id"]]["run"]["id"]
    assert [s["step_name"] for s in run["steps"]] == ["build", "lint", "tests"]
    for step in run["steps"]:
        record = by_id[step["checkpoint_id"]]
        assert step["duration_s"] == record["metrics"]["step_total_time_s"]
        assert step["start"] == record["timestamp"]
    assert run["steps"][0]["duration_s"] >= 0.3
    failure = run["steps"][2]["failure"]
    assert failure["failure_type"] == "test_failure" and failure["rule"] == "failed test"
    assert failure["evidence"] == "FAILED tests/test_a.py::test_x - assert 1 == 2" and failure["exit_status"] == 1
    assert failure["plan"]["strategy"] == "manual" and failure["plan"]["actions"]
    assert run["steps"][0]["failure"] is None
    assert doc["diff"] is None


def test_growth_totals_are_the_records_own_sizes_in_the_order_added(repo: Path) -> None:
    doc = json.loads(run_cli("--json", "report", cwd=repo).stdout)
    listed = sorted(records(repo), key=lambda r: r["added"])
    assert [g["checkpoint_id"] for g in doc["growth"]] == [r["checkpoint_id"] for r in listed]
    last = doc["growth"][-1]
    assert last["total_logical"] == sum(r["metrics"]["bytes_scanned"] for r in listed)
    assert last["total_stored"] == sum(r["metrics"]["compressed_bytes_new"] for r in listed)
    store = repo / ".checkpoints"
    on_disk = sum(p.stat().st_size for top in ("objects", "packs") for p in (store / top).rglob("*") if p.is_file())
    assert doc["stored_now"] == on_disk
    assert sum(d["checkpoints"] for d in doc["days"]) == len(listed)


def test_the_diff_section_is_rrstore_diff(repo: Path, page: Path) -> None:
    first, _, last = workflow_ids(repo)
    doc = json.loads(run_cli("--json", "report", "--diff", first, last, cwd=repo).stdout)
    plain = run_cli("diff", first, last, cwd=repo)
    assert plain.returncode == 0, plain.stderr
    assert sorted(f"A {p}" for p in doc["diff"]["added"]) == sorted(plain.stdout.split("\n")[:-1])
    assert doc["diff"]["added"] == ["lint.txt", "out.txt"]
    items = [d for d in parse(page.read_text()).text if d in ("lint.txt", "out.txt")]
    assert items == ["lint.txt", "out.txt"]


def test_markdown_for_a_ci_summary_escapes_names_and_keeps_tables_whole(repo: Path) -> None:
    summary = repo.parent / "summary.md"
    made = run_cli("report", "--markdown", str(summary), cwd=repo)
    assert made.returncode == 0, made.stderr
    text = summary.read_text()
    printed = run_cli("report", "--markdown", cwd=repo)
    assert printed.stdout.split("generated")[1].count("|") == text.split("generated")[1].count("|")
    assert "<script>" not in text and "<img" not in text
    assert "&lt;script&gt;" in text and "&lt;img src\\=x onerror\\=alert\\(1\\)&gt;" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "standard-step" in line]
    assert len(rows) == 3 and "failed (exit 1)" in rows[2]
    for line in text.splitlines():
        if line.startswith("|"):
            assert line.replace("\\|", "").count("|") in (5, 6, 8), line  # no cell broke its row
    assert "Recovery plan: **MANUAL**" in text and "`pytest -v -x`" in text


def test_bad_input_is_one_line_and_a_documented_code(repo: Path, tmp_path: Path) -> None:
    missing = run_cli("report", "--diff", "latest", "nosuch-step1-20260101_000000", cwd=repo)
    assert "nosuch-step1-20260101_000000" in one_error_line(missing, 12)
    nothing = tmp_path / "empty"
    nothing.mkdir()
    assert "no rrstore store" in one_error_line(run_cli("report", cwd=nothing), 10)
    both = run_cli("--json", "report", "--markdown", cwd=repo)
    assert "--markdown a FILE" in one_error_line(both, 2)
    unwritable = run_cli("report", "--html", str(tmp_path / "no" / "such" / "dir.html"), cwd=repo)
    assert "cannot write" in one_error_line(unwritable, 1)
    assert not list(tmp_path.glob("**/*.tmp"))


def test_crafted_records_are_reported_never_a_crash() -> None:
    """A shared or imported store may hold records whose metrics are anything a JSON object holds,
    times without a zone, or years away: each shows as 'no duration', never an exception."""
    from rrstore.record import CheckpointRecord
    from rrstore.report import render_html, render_markdown
    from rrstore.report.model import Report, group_runs, growth

    def record(number: int, timestamp: str, metrics: dict, message: str | None = None) -> CheckpointRecord:  # type: ignore[type-arg]
        return CheckpointRecord(f"standard-step{number}-20260101_000000-abcdef", "standard", number, HOSTILE,
                                timestamp, "0" * 64, success=message is None, error_message=message,
                                metrics=metrics, run={"id": "<b>run</b>"}, added_ns=number)

    crafted = [record(1, "2026-01-01T00:00:00+00:00", {"exit_status": 0, "step_total_time_s": float("nan"),
                                                       "bytes_scanned": "many", "attempts": [1]}),
               record(2, "2026-01-01T00:00:01", {"exit_status": "1", "step_total_time_s": 1e308,
                                                 "compressed_bytes_new": -5}, "exit status 99999999999999: x"),
               record(3, "9999-12-31T23:59:59+00:00", {"exit_status": 1, "step_total_time_s": 3e7},
                      "exit status 1: no_such_type: <i>evidence</i>")]
    crafted.append(record(4, "2026-01-02T00:00:00+00:00", {"exit_status": 0, "step_total_time_s": 2.5}))
    crafted[-1].run = {"id": "another"}
    lanes = group_runs(crafted)
    first, second = lanes["standard"]
    assert second.run_id == "another" and second.span_s == 2.5
    steps = first.steps
    assert [s.duration_s for s in steps] == [None, None, 3e7]
    assert [s.failure.rule if s.failure else None for s in steps] == [None, "not recorded", "as recorded"]
    assert steps[2].failure is not None and steps[2].failure.found is None  # an unknown type gets no plan
    report = Report(crafted[0].created, "/store", "p", lanes, growth(crafted), 0)
    page, summary = render_html(report), render_markdown(report)
    assert HOSTILE not in page and "<i>" not in page and "<b>run" not in page
    dom = parse(page)
    rows = [a["data-run"] for a, _ in dom.find("g", "run-row")]
    assert rows == ["another", "<b>run</b>"]  # the lane's overview, newest run first
    assert len(dom.find("rect", "run-step")) == len(dom.find("rect", "step-bar")) == 4
    assert "&lt;i&gt;evidence&lt;/i&gt;" in summary and "<b>" not in summary
    assert report.growth[-1].total_logical == 0 and report.growth[-1].total_stored == 0
    json.dumps(report.to_json())


def test_a_resumed_run_is_one_run_whose_newest_attempt_at_each_step_decides(tmp_path: Path) -> None:
    """Step 3 fails until the fix is committed; the resume adds its second attempt to the same run:
    four bars, and the run passed."""
    toml = TOML.replace("echo 'FAILED tests/test_a.py::test_x - assert 1 == 2'; exit 1", "test -f fix.marker")
    root = new_repo(tmp_path, toml)
    assert run_cli("workflow", "--lane", "standard", cwd=root, env=OUTSIDE_CI).returncode == 1
    (root / "fix.marker").write_text("fixed\n")
    git(root, "add", "fix.marker")
    git(root, "commit", "-q", "-m", "fix")
    resumed = run_cli("workflow", "--lane", "standard", "--resume", cwd=root, env=OUTSIDE_CI)
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(run_cli("--json", "report", cwd=root).stdout)
    (run,) = doc["lanes"]["standard"]
    assert [(s["step_number"], s["status"]) for s in run["steps"]] == [(1, "passed"), (2, "passed"),
                                                                       (3, "failed"), (3, "passed")]
    assert run["status"] == "passed"
    assert run["steps"][2]["failure"]["failure_type"] == "unknown"  # 'test -f' says nothing


def test_a_damaged_checkpoint_is_left_out_named_and_exit_13_as_list_does(tmp_path: Path) -> None:
    root = new_repo(tmp_path, TOML)
    assert run_cli("workflow", "--lane", "standard", cwd=root, env=OUTSIDE_CI).returncode == 1
    refs = root / ".checkpoints" / "refs" / "checkpoints"
    broken = sorted(p.name for p in refs.iterdir())[0]
    (refs / broken).write_text("garbage\n")
    out = tmp_path / "damaged.html"
    made = run_cli("report", "--html", str(out), cwd=root)
    assert made.returncode == 13, made.stderr
    assert f"cannot read checkpoint {broken}" in made.stderr and "Traceback" not in made.stderr
    dom = parse(out.read_text())
    bars = step_bars(dom, "standard")
    assert len(bars) == 2 and broken not in [b["data-checkpoint"] for b in bars]
    assert broken in " ".join(dom.text)


# Record text as a shared or imported store may hold it: each line of attack the markdown of a CI
# summary (rendered by GitHub with inline HTML) and a terminal must both show as plain text.
EVIL_LINK, EVIL_IMAGE, EVIL_HTML = "[x](https://evil.example)", "![i](https://evil.example/i.png)", \
    "<img src=x onerror=alert(1)>"
EVIL = f"a `` {EVIL_HTML} `` {EVIL_LINK} | {EVIL_IMAGE}\r# forged\x1b[2J\u2028\x85 \\| e\udcff"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose two step records carry EVIL in every text field a report shows."""
    from rrstore import RollbackRecoverySystem

    root = new_repo(tmp_path_factory.mktemp("hostile"), TOML)
    system = RollbackRecoverySystem(root=root)
    for number, success in ((1, True), (2, False)):
        record = system.checkpoint("standard", number, "x").record
        record.step_name, record.git_branch, record.command = f"{number} {EVIL}", EVIL, f"pytest {EVIL}"
        record.success, record.workflow, record.run = success, "standard", {"id": EVIL}
        record.metrics = {"exit_status": 0 if success else 1, "step_total_time_s": 1.0}
        if not success:
            record.error_message = f"exit status 1: test_failure: FAILED t.py::t - {EVIL}"
        with system.open_store().writing():
            system.checkpoint_manager.update(record)
    return root


def commonmark() -> Any:
    """A CommonMark parser with GitHub's tables."""
    import markdown_it  # a test dependency (pyproject): never skipped

    return markdown_it.MarkdownIt("commonmark").enable("table")


def markdown_html(text: str) -> str:
    return commonmark().render(text)  # type: ignore[no-any-return]


def live_markdown(text: str) -> list[str]:
    """What GitHub-flavoured markdown would make of ``text`` besides text: links, images, HTML, headings."""
    tokens = commonmark().parse(text)
    found = [t.type for t in tokens if t.type in ("html_block", "heading_open") and t.tag != "h2"
             and not (t.tag in ("h3", "h4") and t.map and text.splitlines()[t.map[0]].startswith(("### ", "#### ")))]
    for inline in (t for t in tokens if t.type == "inline"):
        found += [c.type for c in inline.children or [] if c.type in ("link_open", "image", "html_inline")]
    return found


def test_hostile_record_text_is_plain_text_in_markdown_and_renders_everywhere(hostile: Path, tmp_path: Path) -> None:
    printed = run_cli("report", cwd=hostile)
    assert printed.returncode == 0 and "Traceback" not in printed.stderr, printed.stderr
    text = printed.stdout
    assert live_markdown(text) == []
    assert not [c for c in text if c != "\n" and (c < " " or "\x7f" <= c <= "\x9f" or c in "\u2028\u2029")]
    shown = markdown_html(text)  # as GitHub shows it: no element of the record's, its text escaped
    assert "<img" not in shown and "<a " not in shown and "\\x1b[2J" in shown and "e\\udcff" in shown
    assert f"1 {printable(EVIL).strip()}".replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in shown
    rows = [line for line in text.splitlines() if line.startswith("| ") and "standard-step" in line]
    assert len(rows) == 2
    for line in text.splitlines():
        if line.startswith("|"):  # no cell broke its row (an escaped '\|' is text)
            assert line.replace("\\\\", "").replace("\\|", "").count("|") in (5, 6, 8), line
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert [h.split()[0] for h in headings] == ["##", "###", "####", "###"]  # report, lane, run, growth
    page = tmp_path / "r.html"
    made = run_cli("--json", "report", "--html", str(page), cwd=hostile)
    assert made.returncode == 0 and "Traceback" not in made.stderr, made.stderr
    assert "<img" not in page.read_text() and "\\udcff" in page.read_text()
    doc = json.loads(made.stdout)
    assert doc["lanes"]["standard"][0]["steps"][0]["step_name"] == f"1 {EVIL}"  # JSON keeps the exact text


def test_the_ci_summary_escapes_record_text_as_the_report_does() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "ci"))
    try:
        import rrstore_summary
    finally:
        sys.path.pop(0)
    from rrstore.report.markdown import cell, code

    assert rrstore_summary.cell is cell and rrstore_summary.code is code
    plan = {"strategy": EVIL, "strategy_description": EVIL, "notes": [EVIL],
            "actions": [{"step": 1, "action": EVIL, "command": EVIL, "time": EVIL}]}
    assert live_markdown("\n".join(rrstore_summary.plan_lines(plan))) == []
