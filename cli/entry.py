"""The ``rrstore`` console script: ``rrstore --version`` answers before click and the library load.

It is the one call a shell prompt, a CI log header or a version check makes
on every run; everything else goes to ``main`` (which installs the signal
handlers first and then imports click and the command modules it needs).
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from rrstore import __version__

        sys.stdout.write(f"rrstore, version {__version__}\n")  # click's version_option says the same
        return
    from .main import main as run

    run()
