"""Datasets made elsewhere, written as episode stores that every stage trains on unchanged.

Each importer reads its whole source first and builds an :class:`~iris_wm.data.importers.writer.ImportPlan` (the
store's layout and the episodes in the order they are stored), so malformed input is refused before anything is
written; :func:`~iris_wm.data.importers.writer.write_import` then appends the episodes, resumably.
"""
