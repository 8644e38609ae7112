"""``python -m rrstore`` runs the command line."""

from rrstore.cli.entry import main

if __name__ == "__main__":
    main()
