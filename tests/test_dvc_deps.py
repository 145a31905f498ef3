"""Every stage's deps in dvc.yaml must cover the forgelib modules its script imports.

The import closure is derived statically (AST, every import statement, including function-level
ones) from the stage script; a module is covered when dvc.yaml lists it or a parent directory.
A missing dependency would let `dvc repro` skip a stage whose code changed.
"""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    for candidate in (ROOT.joinpath(*parts).with_suffix(".py"), ROOT.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {m for m in out if m.split(".")[0] == "forgelib"}


def closure(script: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [script]
    while todo:
        current = todo.pop()
        for name in imported_modules(current):
            parts = name.split(".")
            # `import forgelib.a.b` also runs forgelib/__init__.py and forgelib/a/__init__.py.
            for i in range(1, len(parts) + 1):
                file = module_file(".".join(parts[:i]))
                if file and file not in seen:
                    seen.add(file)
                    todo.append(file)
    return seen


def stages():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        body = stage.get("do", stage)
        script = body["cmd"].split()[1]
        yield name, ROOT / script, [d for d in body.get("deps", []) if isinstance(d, str)]


@pytest.mark.parametrize("name,script,deps", list(stages()), ids=[s[0] for s in stages()])
def test_stage_deps_cover_import_closure(name, script, deps):
    assert script.is_file(), f"stage {name}: script {script} missing"
    assert str(script.relative_to(ROOT)) in deps, f"stage {name}: its script is not a dep"
    covered = [ROOT / d for d in deps]
    missing = sorted(
        str(f.relative_to(ROOT))
        for f in closure(script)
        if f.name != "__init__.py" or f.parent != ROOT / "forgelib"
        if not any(f == c or c in f.parents for c in covered)
    )
    assert not missing, f"dvc.yaml stage {name!r} misses deps: {missing}"


def test_closure_sees_function_level_imports(tmp_path):
    probe = ROOT / "stages" / "report.py"
    files = {str(f.relative_to(ROOT)) for f in closure(probe)}
    assert "forgelib/report.py" in files and "forgelib/config.py" in files


def declared_params():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        if "foreach" in stage:  # `foreach: ${a.b}` reads a.b from params.yaml too
            yield name, stage["foreach"].strip("${}")
        for entry in stage.get("do", stage).get("params", []):
            for key in ([entry] if isinstance(entry, str) else [k for d in entry.values() for k in d]):
                yield name, key


@pytest.mark.parametrize("params_file", ["params.yaml", "tests/smoke_params.yaml", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "forgelib" / "profiles").glob("*.yaml"))])
def test_every_declared_param_exists_in_params_and_profiles(params_file):
    # DVC refuses to run a stage whose declared params are missing from params.yaml, so a
    # profile written by `forge init` must spell out every key dvc.yaml names.
    data = yaml.safe_load((ROOT / params_file).read_text())
    missing = []
    for stage, key in declared_params():
        node = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(f"{stage}: {key}")
                break
            node = node[part]
    assert not missing, f"{params_file} lacks params declared in dvc.yaml: {missing}"
