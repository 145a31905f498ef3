"""Export: a Forge model (an HF directory or a compressed container) as files other tools run.

Entry points (``forge export`` and the ``deploy`` stage call these):

* :func:`forgelib.export.run.export_model`: one model -> a GGUF file or a plain HF directory;
* :func:`forgelib.export.gguf.write_gguf`: a loaded Llama model + tokenizer -> GGUF (ggml's writer);
* :func:`forgelib.export.check.check_export`: logits of the exported file, read by a client Forge
  did not write (transformers), against the source model;
* :func:`forgelib.export.deploy.deploy`: the ``deploy`` stage's ``dist/``;
* :class:`forgelib.export.config.DeployConfig`: the params.yaml ``deploy`` section.

Like :mod:`forgelib.compress`, this ``__init__`` imports nothing, so loading the ``deploy``
config section does not make the ``validate`` stage depend on the exporters.
"""
