"""The click front end, installed as ``rrstore.cli`` (never as a top-level ``cli``)."""
