"""params.yaml validation: every shipped params file parses; bad input names the key, exit 2."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from forgelib.cli import app
from forgelib.config import SECTIONS, load_params, parse_params
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
