"""Archives (a verb family): one file holding checkpoints with their objects, or one checkpoint's files.

``files`` exports, imports and verifies archive files; ``stream`` reads and
writes the archive format itself, checking every name and object before
anything is written. Imports the verbs below (checkpoint records), trees,
the store and the foundations.
"""
