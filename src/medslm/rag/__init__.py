"""Retrieval with checkable citations: indexes (:mod:`medslm.rag.index`), citation checks (:mod:`medslm.rag.cite`)."""
