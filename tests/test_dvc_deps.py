"""Every stage's code deps in dvc.yaml are exactly the files its script runs: no more, no fewer.

The import closure is derived statically (AST, every import statement, including function-level
ones) from the stage script. Imports made by name at run time are followed too:
``importlib.import_module("forgelib.x")`` with a literal name; the section registry
(``load_section("train")`` imports ``forgelib.train.config``, ``load_params`` every section's
module); and the local ``evaluate`` metric modules that ``forgelib/eval/evaluate.py`` loads by path.

A missing dep would let `dvc repro` skip a stage whose code changed; a dep the stage does not run
(or a whole folder) reruns it, and everything after it, for edits that cannot change its output.
So code deps (under ``forgelib/`` or ``stages/``) must be files, and must equal the closure.
"""

import ast
from pathlib import Path

import pytest
import yaml

from forgelib.config import SECTIONS

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
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            out |= section_modules(node)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            out.add(node.args[0].value)
    return {m for m in out if m.split(".")[0] == "forgelib"}


def section_modules(call: ast.Call) -> set[str]:
    """The config modules a ``load_section("name", ...)`` or ``load_params(...)`` call imports."""
    if call.func.id == "load_params":
        return {target.split(":")[0] for target in SECTIONS.values()}
    if call.func.id == "load_section" and call.args and isinstance(call.args[0], ast.Constant):
        return {SECTIONS[call.args[0].value].split(":")[0]}
    return set()


# Code that a module loads by file path, which no import statement shows.
LOADED_BY_PATH = {
    "forgelib/eval/evaluate.py": ["forgelib/eval/metrics/exact_match/exact_match.py",
                                  "forgelib/eval/metrics/token_perplexity/token_perplexity.py"],
}
# Code that a module runs in a subprocess (`python -m ...`): its closure is the caller's too.
RUN_AS_SUBPROCESS = {
    "forgelib/agents/mcp_client.py": ["forgelib/agents/mcp_server.py"],
}


def closure(script: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [script]
    while todo:
        current = todo.pop()
        rel_current = str(current.relative_to(ROOT)) if ROOT in current.parents else None
        for rel in LOADED_BY_PATH.get(rel_current, []) + RUN_AS_SUBPROCESS.get(rel_current, []):
            if ROOT / rel not in seen:
                seen.add(ROOT / rel)
                todo.append(ROOT / rel)
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


def is_code(dep: str) -> bool:
    return dep.startswith(("forgelib/", "stages/")) or dep in ("forgelib", "stages")


@pytest.mark.parametrize("name,script,deps", list(stages()), ids=[s[0] for s in stages()])
def test_stage_code_deps_equal_the_import_closure(name, script, deps):
    assert script.is_file(), f"stage {name}: script {script} missing"
    code = [d for d in deps if is_code(d)]
    folders = [d for d in code if not (ROOT / d).is_file()]
    assert not folders, f"dvc.yaml stage {name!r}: code deps must be files, not folders: {folders}"
    needed = sorted({str(script.relative_to(ROOT))} | {str(f.relative_to(ROOT)) for f in closure(script)})
    missing = sorted(set(needed) - set(code))
    extra = sorted(set(code) - set(needed))
    assert not missing and not extra, (
        f"dvc.yaml stage {name!r}: misses deps {missing}; lists code it does not run {extra}. "
        f"Its code deps should be: {needed}")


def test_metric_modules_loaded_by_path_are_all_known():
    on_disk = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "forgelib" / "eval" / "metrics").rglob("*.py"))
    assert on_disk == sorted(f for files in LOADED_BY_PATH.values() for f in files)


def test_closure_sees_function_level_imports(tmp_path):
    probe = ROOT / "stages" / "report.py"
    files = {str(f.relative_to(ROOT)) for f in closure(probe)}
    assert "forgelib/report.py" in files and "forgelib/config.py" in files


def test_closure_follows_the_section_registry_and_importlib(tmp_path):
    train = {str(f.relative_to(ROOT)) for f in closure(ROOT / "stages" / "train.py")}
    assert "forgelib/train/config.py" in train and "forgelib/compress/config.py" not in train
    validate = {str(f.relative_to(ROOT)) for f in closure(ROOT / "stages" / "validate.py")}
    assert {target.split(":")[0].replace(".", "/") + ".py" for target in SECTIONS.values()} <= validate
    probe = tmp_path / "probe.py"
    probe.write_text("import importlib\nimportlib.import_module('forgelib.resume')\n")
    assert ROOT / "forgelib" / "resume.py" in closure(probe)


def declared_params():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        if "foreach" in stage:  # `foreach: ${a.b}` reads a.b from params.yaml too
            yield name, stage["foreach"].strip("${}")
        for entry in stage.get("do", stage).get("params", []):
            if isinstance(entry, dict) and all(v is None for v in entry.values()):
                continue  # `- params.yaml:` tracks the whole file (the validate stage)
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


def stages_depending_on(path: str) -> set[str]:
    return {name for name, _, deps in stages() if path in deps}


def test_editing_the_sandbox_or_a_codec_reruns_only_what_runs_it():
    # validate reruns on any config-code edit, but its output never changes, so nothing follows.
    # agents runs it too: its MCP server (a subprocess of the stage) has the run_python tool.
    assert stages_depending_on("forgelib/eval/sandbox.py") == {"humaneval", "agents"}
    # humaneval, deploy and agents load containers, so they run the codecs' decoders.
    assert stages_depending_on("forgelib/compress/codecs/vptq.py") == {"validate", "compress", "humaneval", "deploy",
                                                                        "agents"}
    assert stages_depending_on("forgelib/compress/pipeline.py") == {"compress"}
    assert stages_depending_on("forgelib/report_config.py") == {"validate", "report"}
