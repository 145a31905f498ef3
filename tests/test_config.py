"""params.yaml validation: every shipped params file parses; bad input names the key, exit 2."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from forgelib.cli import app
from forgelib.compress.config import codec_setting_docs
from forgelib.config import SECTIONS, load_params, parse_params, section_class
from forgelib.configtools import field_docs, replace
from forgelib.errors import ForgeError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ROOT / "params.yaml", *sorted((ROOT / "forgelib" / "profiles").glob("*.yaml")), *sorted((ROOT / "tests").glob("*params*.yaml"))]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_params_file_is_valid(path):
    params = load_params(path)
    assert set(params.sections) == set(SECTIONS)


def base_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize(
    "section,key,value,fragment",
    [
        ("prepare", "n_train", 0, "prepare.n_train: expected an integer >= 1, got 0"),
        ("prepare", "max_train_fraction", 1.5, "prepare.max_train_fraction: expected a float in (0, 1), got 1.5"),
        ("prepare", "n_val", "many", "prepare.n_val: expected an integer, got 'many'"),
        ("prepare", "bogus", 1, "prepare.bogus: unknown key"),
        ("base", "seed", True, "base.seed: expected an integer, got True"),
    ],
)
def test_bad_values_name_the_key(section, key, value, fragment):
    data = base_params()
    data[section][key] = value
    with pytest.raises(ForgeError) as err:
        parse_params(data, "params.yaml")
    assert fragment in str(err.value)
    assert str(err.value).startswith("params.yaml: ")


@pytest.mark.parametrize(
    "key,value,fragment",
    [
        ("steps", 0, "base.specialists.logic.steps: expected an integer >= 1 or null, got 0"),
        ("lr", 2.0, "base.specialists.logic.lr: expected a float in (0, 1) or null, got 2.0"),
    ],
)
def test_bad_specialist_override_names_the_key(key, value, fragment):
    data = base_params()
    data["base"]["specialists"]["logic"][key] = value
    with pytest.raises(ForgeError) as err:
        parse_params(data, "params.yaml")
    assert fragment in str(err.value)


def test_nested_key_path_in_message():
    data = base_params()
    data["base"]["model"]["num_heads"] = 5
    with pytest.raises(ForgeError, match=r"base\.model\.num_heads: expected a divisor of hidden_size=64, got 5"):
        parse_params(data)


def test_unknown_section_lists_valid_ones():
    data = base_params()
    data["trian"] = {}
    with pytest.raises(ForgeError, match="trian: unknown section; valid sections: prepare"):
        parse_params(data)


def test_validate_cli_exit_codes(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", "--params", str(ROOT / "params.yaml")])
    assert ok.exit_code == 0, ok.output

    bad = tmp_path / "params.yaml"
    data = base_params()
    data["prepare"]["levels"] = {"add": 9}
    bad.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["validate", "--params", str(bad)])
    assert result.exit_code == 2
    assert "prepare.levels.add: expected a level in 1..4, got 9" in result.output

    malformed = tmp_path / "broken.yaml"
    malformed.write_text("prepare: [unclosed\n")
    result = runner.invoke(app, ["validate", "--params", str(malformed)])
    assert result.exit_code == 2
    assert "malformed YAML" in result.output


def test_explain_lists_documented_keys():
    result = CliRunner().invoke(app, ["validate", "--params", str(ROOT / "params.yaml"), "--explain"])
    assert result.exit_code == 0
    assert "prepare.n_train = 3000" in result.output
    assert "base.model.hidden_size" in result.output
    assert "evomerge.population = 8\n    Candidates per generation" in result.output
    assert "base.specialist.steps = 600\n" in result.output  # the parent's default, not TrainSettings'
    assert "compress.<stage>.<group>.codebook_bits (codec vptq) = 16\n    Codebook storage" in result.output


@pytest.mark.parametrize("section", SECTIONS)
def test_every_key_has_help_text(section):
    rows = field_docs(section_class(section), section + ".")
    undocumented = [key for key, text, _ in rows if not text.strip()]
    assert rows and not undocumented, f"keys without help text: {undocumented}"


def test_every_codec_setting_has_help_text():
    undocumented = [key for key, text, _ in codec_setting_docs() if not text.strip()]
    assert not undocumented, f"codec settings without help text: {undocumented}"


@pytest.mark.parametrize("section", SECTIONS)
def test_load_section_imports_only_its_own_config_module(section):
    # A fresh interpreter: this one has imported every section already.
    probe = (
        "import sys\n"
        "from forgelib.config import SECTIONS, load_section\n"
        f"load_section({section!r}, {str(ROOT / 'params.yaml')!r})\n"
        "print(sorted({t.split(':')[0] for t in SECTIONS.values()} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == str([SECTIONS[section].split(":")[0]])


@pytest.mark.parametrize(
    "key,value,fragment",
    [
        ("bits", 9, "params.yaml: compress.stage2.attention.bits: expected an int in [1, 8], got 9"),
        ("codec", "zip", "params.yaml: compress.stage2.attention.codec: unknown codec 'zip'; valid codecs: fp32"),
        ("group_sizes", 4, "params.yaml: compress.stage2.attention.group_sizes: unknown setting for codec 'gptq'"),
    ],
)
def test_codec_settings_errors_name_the_key(key, value, fragment):
    data = base_params()
    data["compress"]["stage2"]["attention"][key] = value
    with pytest.raises(ForgeError) as err:
        parse_params(data)
    assert str(err.value).startswith(fragment)


def test_codec_groups_are_typed_dataclasses():
    compress = load_params(ROOT / "params.yaml").compress
    attention = compress.stage2.attention
    assert attention.codec == "gptq" and attention.settings.bits == 4 and attention.settings.group_size == 64
    assert attention.settings.bits_per_weight() == 4 + 20 / 64
    assert compress.stage2.mlp.codec == "keep" and compress.stage2.mlp.settings is None
    assert compress.stage1.rungs("attention") == (compress.stage1.attention,)


def test_overrides_name_the_key():
    evomerge = load_params(ROOT / "params.yaml").evomerge
    assert replace(evomerge, "evomerge", population=4).population == 4
    with pytest.raises(ForgeError, match=r"^evomerge\.population: expected an int >= 2, got 1$"):
        replace(evomerge, "evomerge", population=1)
