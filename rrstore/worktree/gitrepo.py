"""Git facts about a working tree, from the ``git`` command itself.

Plain ``git`` rather than GitPython on this path: a checkpoint runs at every
pipeline step, and importing GitPython alone costs ~110 ms (measured with
``python -X importtime``), more than the rest of an unchanged re-checkpoint.
The git commands a scan needs (one listing, a second only when there are
untracked directories, and ``status`` for a record) run concurrently. Every
``git`` subprocess of rrstore runs here, recovery's too (validate's
``check_git`` alone reads the repository through GitPython, on purpose).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RRStoreError
from ..record import is_commit_id


@dataclass(frozen=True)
class GitState:
    commit: str | None
    branch: str | None
    dirty: bool | None
    # A merge, rebase, cherry-pick, revert or bisect in progress (``OPERATIONS``), and MERGE_HEAD then.
    operation: str | None = None
    merge_head: str | None = None


NO_GIT = GitState(None, None, None)

# What git leaves in its directory while an operation waits for the user, in the order git's
# own prompt (contrib/completion/git-prompt.sh) tests them: the first found names the operation.
OPERATIONS = (("rebase-merge", "rebase"), ("rebase-apply", "rebase"), ("MERGE_HEAD", "merge"),
              ("CHERRY_PICK_HEAD", "cherry-pick"), ("REVERT_HEAD", "revert"), ("BISECT_LOG", "bisect"))


@dataclass
class GitScope:
    files: list[str]
    untracked_dirs: list[str]
    state: GitState
    # Those of ``files`` git does not track (``ls-files -t`` tags them '?').
    untracked: list[str] = field(default_factory=list)


def find_git_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` holding ``.git`` (dir or file)."""
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return None


def git_dir(work_tree: Path) -> Path | None:
    """The git directory of the work tree rooted at ``work_tree`` (a ``.git`` folder, or the one a
    ``.git`` file names: worktrees and submodules), read without running git."""
    dot = work_tree / ".git"
    if dot.is_dir():
        return dot
    try:
        line = dot.read_text(errors="surrogateescape").strip()
    except OSError:
        return None
    if not line.startswith("gitdir:"):
        return None
    target = Path(line[len("gitdir:"):].strip())
    return target if target.is_absolute() else (work_tree / target)


def operation_in_progress(work_tree: Path) -> tuple[str | None, str | None]:
    """(operation, MERGE_HEAD) of the git operation waiting in ``work_tree``, or (None, None).

    A rebase's files live in the worktree's own git dir; so do MERGE_HEAD and the others.
    """
    folder = git_dir(work_tree)
    if folder is None:
        return None, None
    operation = next((name for marker, name in OPERATIONS if (folder / marker).exists()), None)
    merge_head = None
    with contextlib.suppress(OSError, IndexError):
        merge_head = (folder / "MERGE_HEAD").read_text(errors="replace").split()[0] or None
    return operation, merge_head


# How to finish and how to abort each waiting operation, as git's own hints say.
OPERATION_ADVICE = {
    "merge": ("git commit --no-edit", "git merge --abort"),
    "rebase": ("git rebase --continue", "git rebase --abort"),
    "cherry-pick": ("git cherry-pick --continue", "git cherry-pick --abort"),
    "revert": ("git revert --continue", "git revert --abort"),
    "bisect": ("git bisect reset", "git bisect reset"),
}


def describe_operation(operation: str, merge_head: str | None) -> str:
    """One sentence naming the waiting ``operation`` and how to finish or abort it, for people."""
    article = "an" if operation[0] in "aeiou" else "a"
    head = f" (MERGE_HEAD {merge_head[:7]})" if merge_head and operation == "merge" else ""
    finish, abort = OPERATION_ADVICE.get(operation, ("git status", "git status"))
    if finish == abort:
        return f"{article} {operation} is in progress{head}: end it with {finish}"
    return f"{article} {operation} is in progress{head}: finish with {finish} or abort with {abort}"


def unmerged_paths(work_tree: Path) -> list[str]:
    """Paths git's index holds unmerged (a conflict not yet resolved and added), each once."""
    return _split_z(_finish(_start(work_tree, "diff", "--name-only", "--diff-filter=U", "-z"), work_tree))


def _split_z(raw: bytes) -> list[str]:
    return [os.fsdecode(item) for item in raw.split(b"\0") if item]


def _start(root: Path, *args: str, stdin: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["git", "-C", str(root), *args], stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes], root: Path, ok: tuple[int, ...] = (0,),
            data: bytes | None = None) -> bytes:
    out, err = proc.communicate(data)
    if proc.returncode not in ok:
        lines = err.decode(errors="replace").strip().splitlines()
        args = proc.args[3] if isinstance(proc.args, list) else "?"
        raise RRStoreError(f"git {args} failed in {root}: {lines[-1] if lines else proc.returncode}")
    return out


def list_scope(root: Path, *, with_state: bool) -> GitScope:
    """Tracked + untracked-not-ignored files, untracked dirs (where empty dirs live), git state.

    One ``ls-files -t --directory`` lists the tracked files, the untracked
    ones, and the untracked directories (where empty ones may be) collapsed
    to ``dir/``; only when it shows such a directory does a second listing
    without ``--directory`` name the files inside. ``-t`` tags untracked
    files with '?', which tells dirtiness from untracked files; ``status
    -uno`` gives commit, branch and tracked changes without a second
    untracked scan.
    """
    listing_p = _start(root, "ls-files", "-z", "-t", "--cached", "--others", "--exclude-standard", "--directory")
    status_p = _start(root, "status", "--porcelain=v2", "--branch", "-z", "-uno") if with_state else None
    listed = _split_z(_finish(listing_p, root))
    dirs = [t[2:] for t in listed if t.startswith("? ") and t.endswith("/")]
    tagged = listed
    if dirs:  # their files, one by one
        tagged = _split_z(_finish(_start(root, "ls-files", "-z", "-t", "--cached", "--others", "--exclude-standard"),
                                  root))
    # once each: during a merge conflict the index holds a path up to three times (stages 1-3); the
    # scope takes the file on disk, once
    files = list(dict.fromkeys(t[2:] for t in tagged))
    state = NO_GIT
    if status_p is not None:
        untracked = any(t.startswith("?") for t in tagged)
        state = _parse_status(_finish(status_p, root), untracked)
        top = find_git_root(root)
        operation, merge_head = operation_in_progress(top) if top is not None else (None, None)
        state = GitState(state.commit, state.branch, state.dirty, operation, merge_head)
    others = [t[2:] for t in tagged if t.startswith("?")]
    return GitScope(files, dirs, state, others)


def _parse_status(raw: bytes, untracked: bool) -> GitState:
    commit = branch = None
    dirty = untracked
    for item in _split_z(raw):
        if item.startswith("# branch.oid "):
            value = item[len("# branch.oid "):]
            commit = None if value == "(initial)" else value
        elif item.startswith("# branch.head "):
            value = item[len("# branch.head "):]
            branch = None if value == "(detached)" else value
        elif not item.startswith("#") and item[:2] in ("1 ", "2 ", "u "):
            dirty = True
    return GitState(commit, branch, dirty)


def ignored(root: Path, paths: list[str]) -> set[str]:
    """The subset of ``paths`` that git's ignore rules exclude."""
    if not paths:
        return set()
    proc = _start(root, "check-ignore", "-z", "--stdin", stdin=subprocess.PIPE)
    data = b"\0".join(os.fsencode(p) for p in paths) + b"\0"
    return set(_split_z(_finish(proc, root, ok=(0, 1), data=data)))


def ignored_files(root: Path, folders: list[str]) -> list[str]:
    """The files git ignores at or below ``folders`` (paths relative to ``root``; "" is the root):
    what the ``scope_include`` setting adds to a git scope. One ``ls-files``; none when empty."""
    if not folders:
        return []
    specs = [folder or "." for folder in folders]
    proc = _start(root, "--literal-pathspecs", "ls-files", "-z", "--others", "--ignored", "--exclude-standard",
                  "--", *specs)
    return _split_z(_finish(proc, root))


# Ports a URL form implies, dropped so ``ssh://host:22/p`` and ``git@host:p`` name one project.
_DEFAULT_PORTS = {"ssh": "22", "git+ssh": "22", "ssh+git": "22", "https": "443", "http": "80", "git": "9418"}


def normalise_remote(url: str, root: Path) -> str:
    """``url`` in one spelling per repository: ``host/path`` without credentials, port, ``.git`` or ``/``.

    ``https://user:pw@github.com/pallets/flask.git/``, ``git@github.com:pallets/flask`` and
    ``ssh://git@github.com:22/pallets/flask`` all give ``github.com/pallets/flask``; a local
    remote (a path, relative ones resolved from ``root``, or ``file://``) gives its absolute path.
    """
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() != "file":
        authority, _, path = rest.partition("/")
        host = authority.rpartition("@")[2].lower()
        name, colon, port = host.rpartition(":")
        if colon and _DEFAULT_PORTS.get(scheme.lower()) == port:
            host = name
        text = f"{host}/{path}"
    elif sep:  # file://
        text = str(Path(rest))
    elif ":" in url.split("/", 1)[0]:  # git's scp-like form, [user@]host:path
        host, _, path = url.partition(":")
        text = f"{host.rpartition('@')[2].lower()}/{path.lstrip('/')}"
    else:
        text = os.path.normpath(root / url)
    return text.rstrip("/").removesuffix(".git").rstrip("/")


def _git_out(root: Path, *args: str) -> str | None:
    """Stdout of ``git -C root ARGS``, or None when git fails or is not installed."""
    done = _git_run(root, *args)
    return os.fsdecode(done.stdout) if done is not None and done.returncode == 0 else None


def _git_run(root: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[bytes] | None:
    """``git -C root ARGS`` run to the end (within ``timeout`` seconds); None when it could not run."""
    try:
        return subprocess.run(["git", "-C", str(root), *args], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def tracked_paths(root: Path, names: Iterable[str] = (), *, timeout: float = 120) -> set[str] | None:
    """The paths git tracks (relative to ``root``, also when it is a folder inside a work tree), or
    only those of ``names``; None when git fails (not a repository, no git, out of time)."""
    names = list(names)
    done = _git_run(root, "ls-files", "-z", *(["--", *names] if names else []), timeout=timeout)
    if done is None or done.returncode != 0:
        return None
    return set(_split_z(done.stdout))


def uncommitted(root: Path, *, timeout: float = 60) -> list[str]:
    """``git status --porcelain`` lines (untracked files too, ignored ones not): empty when clean.

    A git that fails raises RRStoreError with git's last line of stderr.
    """
    done = _git_run(root, "status", "--porcelain", "--untracked-files=normal", timeout=timeout)
    if done is None:
        raise RRStoreError("git status failed")
    if done.returncode != 0:
        raise RRStoreError((done.stderr.decode(errors="replace").strip().splitlines() or ["git status failed"])[-1])
    return [line for line in os.fsdecode(done.stdout).splitlines() if line.strip()]


def remote_names(root: Path, *, timeout: float = 30) -> list[str] | None:
    """The names of the repository's remotes (``git remote``); None when git did not run."""
    done = _git_run(root, "remote", timeout=timeout)
    return None if done is None else os.fsdecode(done.stdout).split()


def project_identity(root: Path) -> str:
    """Whose checkpoints these are, the same for every clone of one repository wherever it lives.

    In git: ``git:`` and the normalised URL of remote ``origin`` (else of the first remote by
    name); without a remote, ``git:root-`` and the oldest root commit; a repository without
    commits, or no git at all, is ``path:`` and the resolved root. A root below the work tree's
    top adds ``#`` and its path from the top (a checkpoint of a subdirectory is another tree).
    One ``git config`` call, plus one ``rev-list`` only when there is no remote.
    """
    root = root.resolve()
    top = find_git_root(root)
    if top is None:
        return f"path:{root}"
    suffix = _below_top(root, top)
    listed = _git_out(root, "config", "--local", "-z", "--get-regexp", r"^remote\..*\.url$") or ""
    urls: dict[str, str] = {}
    for item in listed.split("\0"):
        key, _, value = item.partition("\n")
        if key.startswith("remote.") and key.endswith(".url") and value.strip():
            urls.setdefault(key[len("remote."):-len(".url")], value)
    if urls:
        name = "origin" if "origin" in urls else sorted(urls)[0]
        return f"git:{normalise_remote(urls[name], top)}{suffix}"
    first = _first_commit(root)
    return f"git:root-{first}{suffix}" if first else f"path:{root}"


def earlier_identities(root: Path, identity: str) -> set[str]:
    """What ``project_identity`` said of this project before it had a history or a remote.

    Its path (checkpoints taken before ``git init`` and the first commit), and, once it has a
    remote, its first commit (taken before ``git remote add``): they stay the project's own.
    The first commit costs one ``rev-list``, only for a project with a remote. A record of
    another git identity (the remote's URL changed since) is judged by ``known_commits`` instead:
    see ``checkpoint.ProjectView``.
    """
    root = root.resolve()
    found = {f"path:{root}"}
    top = find_git_root(root)
    if top is not None and not identity.startswith(("git:root-", "path:")):
        first = _first_commit(root)
        if first:
            found.add(f"git:root-{first}{_below_top(root, top)}")
    return found - {identity}


def known_commits(root: Path, shas: Iterable[str]) -> set[str]:
    """Those of ``shas`` (full commit ids) that name a commit of the repository at ``root``.

    One ``git cat-file --batch-check`` for all of them; none without git or outside a repository.
    """
    asked = sorted({sha for sha in shas if is_commit_id(sha)})
    if not asked:
        return set()
    try:
        proc = _start(root, "cat-file", "--batch-check=%(objectname) %(objecttype)", stdin=subprocess.PIPE)
        out, _ = proc.communicate("".join(f"{sha}^{{commit}}\n" for sha in asked).encode())
    except OSError:
        return set()
    if proc.returncode != 0:
        return set()
    found = {line.split()[0] for line in out.decode(errors="replace").splitlines()
             if line.endswith(" commit")}
    return found & set(asked)


def _below_top(root: Path, top: Path) -> str:
    sub = root.relative_to(top).as_posix()
    return "" if sub == "." else f"#{sub}"


def _first_commit(root: Path) -> str | None:
    """The oldest root commit HEAD reaches (None before the first commit, or without git)."""
    roots = (_git_out(root, "rev-list", "--max-parents=0", "HEAD") or "").split()
    return roots[-1] if roots else None


def current_branch(root: Path, *, timeout: float = 30) -> str | None:
    """The branch checked out (what a record's ``git_branch`` holds); None when detached or not git."""
    done = _git_run(root, "symbolic-ref", "--quiet", "--short", "HEAD", timeout=timeout)
    if done is None or done.returncode != 0:
        return None
    return os.fsdecode(done.stdout).strip() or None


def differ_from_commit(root: Path, commit: str, paths: Iterable[str], *, timeout: float = 60) -> set[str] | None:
    """Those of ``paths`` whose working-tree content differs from (or is absent at) ``commit``; None
    when git cannot tell (not a repository, a commit this clone lacks: a shallow one, or ``commit``
    not a full commit id: a record's commit is never handed to git as anything but a revision)."""
    if not is_commit_id(commit):
        return None
    names = list(paths)
    found: set[str] = set()
    for at in range(0, len(names), 1000):  # within any system's command-line limit
        done = _git_run(root, "--literal-pathspecs", "diff", "--no-renames", "--relative", "--name-only", "-z",
                        "--end-of-options", commit, "--", *names[at:at + 1000], timeout=timeout)
        if done is None or done.returncode != 0:
            return None
        found.update(_split_z(done.stdout))
    return found


def tracked_at(root: Path, commit: str, *, timeout: float = 120) -> set[str] | None:
    """The paths git tracked at ``commit`` (relative to ``root``, as ``tracked_paths`` gives them);
    None when git cannot tell: not a repository, a commit this clone lacks (a shallow one), or
    ``commit`` not a full commit id."""
    if not is_commit_id(commit):
        return None
    done = _git_run(root, "ls-tree", "-r", "--name-only", "-z", "--end-of-options", f"{commit}^{{commit}}",
                    timeout=timeout)
    if done is None or done.returncode != 0:
        return None
    return set(_split_z(done.stdout))
