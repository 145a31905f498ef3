"""Quiet-STaR thought training (Zelikman et al. 2024, arXiv 2403.09629) at the answer position.

- :mod:`~forgelib.quietstar.objective`: mixing, reward, baseline and REINFORCE as pure functions;
- :mod:`~forgelib.quietstar.decoding`: padding, hidden states, greedy decoding, exact-match scoring;
- :mod:`~forgelib.quietstar.model`: the thinking model (thought tokens, mixing head, thinking
  inference, save/load, evaluation);
- :mod:`~forgelib.quietstar.train`: the training loop;
- :mod:`~forgelib.quietstar.arms`: the control arms (sft, pause, random thoughts);
- :mod:`~forgelib.quietstar.run`: the stage and the measurement bench/quietstar.py prints.
"""
