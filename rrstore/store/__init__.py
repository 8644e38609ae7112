"""The object database (layer above the backends): content-addressed objects, packs, refs, one store.

``objects`` keeps blobs, trees and records by BLAKE3 (loose files and packs,
zstd-compressed); ``pack`` writes and reads pack files and their indexes;
``refs`` names checkpoints and pins; ``store`` opens a store over a backend
with its config, locks and write barrier. Imports only the foundations
(errors, config, fsutil, lock) and ``rrstore.backends``.
"""
