"""The ``specialize`` stage: Transformer² SVF experts with a dispatcher and few-shot mixing
(:mod:`forgelib.specialize.svf`, ``experts``, ``dispatch``, ``mixing``), prompt baking
(``bake``), and the specialized artifact they make (``model``). ``run`` orders them."""
