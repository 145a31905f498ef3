"""Forge-loop controllers: one small object per file, listed in :mod:`.registry`."""
