"""Archives (a verb family): one file holding checkpoints with their objects, or one checkpoint's files.

``files`` exports, imports and verifies archive files (the entry points);
``stream`` reads and writes the archive format itself (header, entries,
trailer, in zstd frames); ``safety`` is the one checking pass over an
archive, under its limits, so every name, link and object is checked
before anything is written; ``location`` opens an archive where it
lives (a file, or ``s3://BUCKET/KEY`` as one stream); ``tar`` writes one
checkpoint as a ``.tar.zst``. Imports the verbs below (checkpoint
records), trees, the store, the S3 backend and the foundations.
"""
