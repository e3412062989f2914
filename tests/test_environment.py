"""The install story agrees with itself: environment.yml (conda) with pyproject.toml (pip), the CPU pins in
constraints.txt, the Makefile's setup, and CI calling the README's test command."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}                  # conda package names that differ from the PyPI ones
PINS = {"torch": "2.14.1", "torchvision": "0.29.1"}


def _name(name: str) -> str:
    name = canonicalize_name(name)
    return CONDA_TO_PIP.get(name, name)


def pip_requirements() -> dict[str, SpecifierSet]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("slurm", "test"):
        reqs += project["optional-dependencies"][extra]
    out = {}
    for line in reqs:
        r = Requirement(line)
        out[_name(r.name)] = r.specifier
    return out


def conda_requirements() -> dict[str, SpecifierSet]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):                    # the pip: section installs the package itself
            assert set(dep) == {"pip"}, dep
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dep.strip())
        assert m, f"cannot read the conda spec {dep!r}"
        name, spec = m.groups()
        if name in ("python", "pip"):
            continue
        assert " " not in spec, f"{dep!r}: write conda specs in pip syntax (name>=x,<y)"
        out[_name(name)] = SpecifierSet(spec)
    return out


def _bounds(spec: SpecifierSet, ops) -> set[tuple[str, Version]]:
    return {(s.operator, Version(s.version)) for s in spec if s.operator in ops}


def test_environment_yml_parses():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["name"] and env["channels"] and env["dependencies"]
    assert any(isinstance(d, dict) and "-e ." in d["pip"] for d in env["dependencies"]), \
        "environment.yml should pip-install the package itself (-e .)"
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python and python[0].replace(" ", "") == "python" + requires


def test_environment_yml_and_pyproject_list_the_same_packages():
    conda, pip = conda_requirements(), pip_requirements()
    assert set(conda) == set(pip), {"only in environment.yml": sorted(set(conda) - set(pip)),
                                    "only in pyproject.toml": sorted(set(pip) - set(conda))}


def test_environment_yml_and_pyproject_have_the_same_bounds():
    conda, pip = conda_requirements(), pip_requirements()
    for name in sorted(set(conda) & set(pip)):
        assert _bounds(conda[name], (">=", ">")) == _bounds(pip[name], (">=", ">")), \
            f"{name}: lower bounds differ: environment.yml {conda[name]}, pyproject.toml {pip[name]}"
        assert _bounds(conda[name], ("<", "<=")) == _bounds(pip[name], ("<", "<=")), \
            f"{name}: upper bounds differ: environment.yml {conda[name]}, pyproject.toml {pip[name]}"
        assert conda[name] == pip[name], f"{name}: environment.yml {conda[name]} vs pyproject.toml {pip[name]}"


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            r = Requirement(line)
            (spec,) = r.specifier
            assert spec.operator == "==", f"constraints.txt should pin exactly: {line}"
            pins[_name(r.name)] = spec.version
    return pins


def test_constraints_pin_torch_and_torchvision():
    pins = constraints()
    assert {k: pins.get(k) for k in PINS} == PINS, pins


def test_pins_satisfy_the_project_ranges():
    pip = pip_requirements()
    for name, version in constraints().items():
        assert name in pip, f"constraints.txt pins {name}, which pyproject.toml does not require"
        assert pip[name].contains(version, prereleases=True), f"{name}=={version} is outside {pip[name]}"


def _recipe(makefile: str, target: str) -> list[str]:
    """The recipe lines of a Makefile target (tab-indented lines after `target:`)."""
    lines = makefile.splitlines()
    (start,) = [i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:(?!=)", line)]
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_makefile_setup_installs_with_the_constraints():
    makefile = (REPO / "Makefile").read_text()
    setup = re.search(r"^setup\s*:(.*)$", makefile, re.M)
    assert setup, "no setup target"
    targets = setup[1].split()
    recipe = _recipe(makefile, "setup") + [line for t in targets for line in _recipe(makefile, t)]
    installs = [line for line in recipe if re.search(r"\bpip install\b", line) and "--upgrade pip" not in line]
    assert installs, f"setup installs nothing with pip: {recipe}"
    for line in installs:
        assert re.search(r"(^|\s)-c constraints\.txt(\s|$)", line), f"installed without -c constraints.txt: {line}"
    assert any(re.search(r"\btorch\b", line) for line in installs)
    assert any(re.search(r"-e\s+'?\.(\[|'|\s|$)", line) for line in installs), "the package is not installed"


def test_ci_runs_the_readme_test_command():
    readme = REPO / "README.md"
    if not readme.exists():
        pytest.skip("README.md does not exist yet (it is being written)")
    head = readme.read_text().splitlines()[:20]
    # the first commands block: `make test   # ...`
    commands = [line.split("#", 1)[0].strip() for line in head]
    test_cmds = [c for c in commands if re.fullmatch(r"(make test|\S*pytest.*)", c)]
    assert test_cmds, "no test command in the first lines of README.md:\n" + "\n".join(head)
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.strip().startswith("#")]
    assert test_cmds[0] in ci, f"{test_cmds[0]!r} not run by .ci/run: {ci}"


CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _setup_installs(tmp_path, *assignments: str) -> list[list[str]]:
    """The `pip install` command lines `make setup` would run into a fresh venv (make -n), as argument lists."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    proc = subprocess.run(["make", "-n", "setup", f"VENV={tmp_path / 'venv'}", *assignments], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [shlex.split(line) for line in proc.stdout.splitlines()]
    return [line[2:] for line in lines if line[0].endswith("/pip") and line[1] == "install"
            and "--upgrade" not in line]


def _pip_reads(args: list[str]):
    """(options, requirements) as pip itself parses an install command line, without this machine's pip
    configuration (PIP_CONFIG_FILE=/dev/null: no configuration file; isolated: no PIP_* variables)."""
    commands = pytest.importorskip("pip._internal.commands")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIP_CONFIG_FILE", os.devnull)
        return commands.create_command("install", isolated=True).parse_args(list(args))


def test_setup_installs_torch_from_pypi_by_default(tmp_path):
    (torch, package) = _setup_installs(tmp_path)
    for args in (torch, package):
        opts, _ = _pip_reads(args)
        assert opts.constraints == ["constraints.txt"]
        assert opts.index_url == "https://pypi.org/simple" and not opts.extra_index_urls, args    # pip's default
    assert _pip_reads(torch)[1] == ["torch", "torchvision"]
    assert _pip_reads(package)[0].editables == [".[test,slurm]"]


def test_setup_takes_torch_from_the_index_given(tmp_path):
    (torch, package) = _setup_installs(tmp_path, f"TORCH_INDEX={CPU_INDEX}")
    opts, reqs = _pip_reads(torch)
    assert reqs == ["torch", "torchvision"] and opts.constraints == ["constraints.txt"]      # the pins kept
    assert opts.index_url == CPU_INDEX and not opts.extra_index_urls
    opts, _ = _pip_reads(package)                     # the package and its other dependencies: still PyPI
    assert opts.index_url == "https://pypi.org/simple" and opts.constraints == ["constraints.txt"]
    assert package == _setup_installs(tmp_path)[1]


def test_readme_names_both_installs():
    readme = (REPO / "README.md").read_text()
    name = yaml.safe_load((REPO / "environment.yml").read_text())["name"]
    assert "conda env create -f environment.yml" in readme and f"conda activate {name}" in readme
    assert f"make setup TORCH_INDEX={CPU_INDEX}" in readme
