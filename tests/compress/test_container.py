"""The container round-trips, counts its real bytes and refuses damaged files."""

from pathlib import Path

import pytest
import torch

from forgelib.compress.codecs.registry import get_codec, make_config
from forgelib.compress.container import Container, Entry, read_container, serialized_size, write_container
from forgelib.errors import ForgeError


def sample_container():
    g = torch.Generator().manual_seed(0)
    entries = {}
    for name, codec, shape in [("model.embed_tokens.weight", "int8", (16, 8)),
                               ("model.layers.0.mlp.up_proj.weight", "bitnet158", (32, 8)),
                               ("model.norm.weight", "fp16", (8,))]:
        config = make_config(codec)
        payload = get_codec(codec).encode(torch.randn(*shape, generator=g), config)
        entries[name] = Entry(codec, {}, payload)
    files = {"tokenizer.json": b'{"vocab": {"a": 3}}', "special.bin": bytes(range(256))}
    return Container(entries, {"model_type": "llama", "hidden_size": 8}, files, {"stage": "test"})


def test_round_trip_and_real_size(tmp_path):
    original = sample_container()
    path = tmp_path / "m.forge.safetensors"
    size = write_container(path, original)
    assert size == path.stat().st_size == serialized_size(original)
    loaded = read_container(path)
    assert loaded.model_config == original.model_config and loaded.files == original.files
    assert loaded.info == original.info and list(loaded.entries) == sorted(original.entries)
    for name, entry in original.entries.items():
        got = loaded.entries[name]
        assert got.codec == entry.codec and got.payload.meta == entry.payload.meta
        for key, tensor in entry.payload.tensors.items():
            assert got.payload.tensors[key].dtype == tensor.dtype and got.payload.tensors[key].equal(tensor)
        decode = get_codec(entry.codec).decode
        assert decode(got.payload).equal(decode(entry.payload))


def test_flipped_data_byte_is_rejected(tmp_path):
    path = tmp_path / "m.forge.safetensors"
    write_container(path, sample_container())
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x01  # inside the tensor data section
    path.write_bytes(bytes(data))
    with pytest.raises(ForgeError, match="checksum mismatch"):
        read_container(path)


def _tensor_span(data: bytes, name: str) -> tuple[int, int]:
    """Absolute [start, end) of one tensor's bytes in a safetensors file."""
    import json
    import struct

    header_len = struct.unpack("<Q", data[:8])[0]
    start, end = json.loads(data[8 : 8 + header_len])[name]["data_offsets"]
    return 8 + header_len + start, 8 + header_len + end


@pytest.mark.parametrize("tensor", ["__index__", "__files__", "__payload__"])
def test_flipped_byte_in_each_part_is_rejected(tmp_path, tensor):
    path = tmp_path / "m.forge.safetensors"
    write_container(path, sample_container())
    data = bytearray(path.read_bytes())
    start, end = _tensor_span(bytes(data), tensor)
    data[(start + end) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ForgeError, match="checksum mismatch"):
        read_container(path)


def test_header_is_compact(tmp_path):
    """The safetensors header holds three tensors whatever the number of weights: growing the
    model from 3 to 30 weights must not grow the header (format 1 grew ~400 B per weight)."""
    import struct

    small = sample_container()
    big = Container({f"model.layers.{i}.{n}": e for i in range(10) for n, e in small.entries.items()},
                    small.model_config, small.files, small.info)
    sizes = []
    for name, container in (("small", small), ("big", big)):
        path = tmp_path / f"{name}.forge.safetensors"
        write_container(path, container)
        sizes.append(struct.unpack("<Q", path.read_bytes()[:8])[0])
    assert max(sizes) < 400 and sizes[1] - sizes[0] <= 16  # only the byte offsets grow a digit


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_container_is_rejected(tmp_path, keep):
    path = tmp_path / "m.forge.safetensors"
    size = write_container(path, sample_container())
    path.write_bytes(path.read_bytes()[: int(size * keep)])
    with pytest.raises(ForgeError, match="truncated or corrupt"):
        read_container(path)


def test_plain_safetensors_file_and_missing_file_are_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(ForgeError, match="not a Forge container"):
        read_container(path)
    with pytest.raises(ForgeError, match="no such compressed container"):
        read_container(tmp_path / "absent.safetensors")


def test_file_bytes_do_not_depend_on_the_process(tmp_path):
    """safetensors writes metadata from a hash map: the container sorts it, so separate processes
    write byte-identical files."""
    import subprocess
    import sys

    script = ("import sys; sys.path.insert(0, 'tests/compress'); from test_container import sample_container; "
              "from forgelib.compress.container import write_container; write_container(sys.argv[1], sample_container())")
    paths = [tmp_path / f"{i}.forge.safetensors" for i in range(4)]
    for path in paths:
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, cwd=Path(__file__).resolve().parents[2])
    assert len({p.read_bytes() for p in paths}) == 1
    assert b'"__metadata__":{"checksum":' in paths[0].read_bytes()[:200]
