"""The working tree (layer above trees and records): what a checkpoint holds, read from disk.

``scan`` decides the scope (git's listing, or a walk with ``.rrstoreignore``);
``gitrepo`` owns every git subprocess; ``statcache`` remembers file stats so
unchanged files are not read again; ``snapshot`` hashes and stores the scope
as trees; ``workers`` sizes the thread pools. Imports the store, trees and
the foundations, never a verb.
"""
