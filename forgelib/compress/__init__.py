"""Model compression: codecs (BitNet b1.58, SeedLM, VPTQ, HyperFn), one container file, a loader.

Entry points (the ``compress`` stage and ``forge compression`` call these):

* :func:`forgelib.compress.pipeline.compress_model`: the two-stage pipeline, writes
  ``<out>/{stage1,final}/model.forge.safetensors``;
* :func:`forgelib.compress.loader.load_compressed`: a container -> a runnable torch model;
* :func:`forgelib.compress.loader.decompress_to_dir`: a container -> a Hugging Face model directory;
* :class:`forgelib.compress.config.CompressConfig`: the params.yaml ``compress`` section.

This package's ``__init__`` imports nothing, so loading the ``compress`` config section (for the
``validate`` stage) does not make it depend on the pipeline's code.
"""
