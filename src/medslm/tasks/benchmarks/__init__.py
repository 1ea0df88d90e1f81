"""One spec module per benchmark (see :mod:`medslm.tasks.spec`)."""
