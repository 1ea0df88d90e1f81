"""Sharing models as the field shares them: Hub model cards and pushes."""
