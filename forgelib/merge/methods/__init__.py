"""Merge methods: one file per method, each a pure tensor function citing its paper, collected
in ``registry.py`` under mergekit's names."""
