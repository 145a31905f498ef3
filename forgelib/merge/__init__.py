"""Model merging: mergekit-compatible recipes, a streaming engine and an evolutionary search.

Entry points (the ``forge merge`` / ``forge evo`` commands and the ``evomerge`` stage call these):

- :func:`forgelib.merge.engine.merge_from_yaml` / :func:`~forgelib.merge.engine.merge_recipe`
- :func:`forgelib.merge.evolve.evolve` with :class:`forgelib.merge.config.EvoMergeConfig`
- :func:`forgelib.merge.dfs.dfs_recipe` (data-flow merging as a passthrough recipe)
- :func:`forgelib.merge.genome.uniform_recipe` (baselines such as uniform task arithmetic)
"""
