"""Model compression: codecs (BitNet b1.58, SeedLM, VPTQ, HyperFn), one container file, a loader.

Entry points (the ``compress`` stage and ``forge compression`` call these):

* :func:`compress_model` — the two-stage pipeline, writes ``<out>/{stage1,final}/model.forge.safetensors``;
* :func:`load_compressed` — a container -> a runnable torch model;
* :func:`decompress_to_dir` — a container -> a Hugging Face model directory;
* :class:`CompressConfig` — the params.yaml ``compress`` section.
"""

from forgelib.compress.config import CompressConfig, HealConfig, Stage1Config, Stage2Config, StageConfig
from forgelib.compress.loader import decompress_to_dir, load_compressed
from forgelib.compress.pipeline import CONTAINER_NAME, compress_model

__all__ = ["CONTAINER_NAME", "CompressConfig", "HealConfig", "Stage1Config", "Stage2Config", "StageConfig",
           "compress_model", "decompress_to_dir", "load_compressed"]
