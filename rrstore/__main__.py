"""``python -m rrstore`` runs the command line."""

from rrstore.cli.main import main

if __name__ == "__main__":
    main()
