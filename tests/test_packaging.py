"""Packaging (issue 9, item 4): the wheel holds every module; an installed copy finds the course or says what to do."""

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from clipcourse import paths

CHECKOUT = Path(__file__).resolve().parent.parent
BUILD_INPUTS = ("pyproject.toml", "README.md", "setup.py", "setup.cfg", "MANIFEST.in", "LICENSE")
# In the subprocesses: drop the editable install's finder, which would otherwise quietly serve any
# module the installed copy lacks from the checkout (it maps every clipcourse.* name to the checkout).
NO_EDITABLE = textwrap.dedent("""\
    import sys
    def _ours(x):
        return not getattr(x, "__module__", "").startswith("__editable__")
    sys.meta_path[:] = filter(_ours, sys.meta_path)
    sys.path_hooks[:] = filter(_ours, sys.path_hooks)
    sys.path_importer_cache.clear()
    """)


def _source_modules():
    """Every clipcourse/**/*.py of the source tree, as paths inside the wheel."""
    files = (CHECKOUT / "clipcourse").rglob("*.py")
    return sorted(p.relative_to(CHECKOUT).as_posix() for p in files
                  if not any(part == "__pycache__" or part.startswith(".") for part in p.parts))


def _tracked_package_data():
    """Files under clipcourse/ that git tracks and that are not Python (data the code may read)."""
    try:
        out = subprocess.run(["git", "ls-files", "clipcourse"], cwd=CHECKOUT, capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(line for line in out.splitlines() if line and not line.endswith(".py"))


def _pip(*args, cwd):
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    result = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the source tree, so no build/ or *.egg-info lands in the checkout."""
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        if (CHECKOUT / name).exists():
            shutil.copy2(CHECKOUT / name, src / name)
    shutil.copytree(CHECKOUT / "clipcourse", src / "clipcourse",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    dist = tmp_path_factory.mktemp("dist")
    _pip("wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist), cwd=src)
    (built,) = dist.glob("clipcourse-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """A folder that the wheel was installed into, as `pip install .` would into site-packages."""
    target = tmp_path_factory.mktemp("site-packages")
    _pip("install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel), cwd=target)
    return target


def _run_installed(code, target, cwd, **env_extra):
    """Run `code` in a fresh Python that sees only the installed copy of clipcourse, from folder `cwd`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", paths.ENV_VAR)}
    env.update(PYTHONPATH=str(target), MPLBACKEND="Agg", **env_extra)
    return subprocess.run([sys.executable, "-c", NO_EDITABLE + textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_wheel_holds_every_module_of_the_source_tree(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in _source_modules() + _tracked_package_data() if f not in names]
    assert not missing, f"the wheel leaves out {missing}: check [tool.setuptools.packages.find] in pyproject.toml"
    assert "clipcourse/exercises/lesson04.py" in names


@pytest.mark.slow
def test_installed_wheel_imports_every_module_without_the_checkout(installed, tmp_path):
    modules = [f[:-len(".py")].replace("/", ".").removesuffix(".__init__") for f in _source_modules()]
    assert "clipcourse.exercises.lesson04" in modules
    result = _run_installed(f"""
        import importlib
        from pathlib import Path
        target = Path({str(installed)!r}).resolve()
        for name in {modules!r}:
            module = importlib.import_module(name)
            where = Path(module.__file__).resolve()
            assert where.is_relative_to(target), f"{{name}} was imported from {{where}}, not the installed copy"
        print("imported", len({modules!r}))
        """, installed, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"imported {len(modules)}" in result.stdout


@pytest.mark.slow
def test_installed_copy_away_from_the_checkout_says_what_to_do(installed, tmp_path):
    result = _run_installed("""
        from clipcourse import paths            # importing never fails
        try:
            paths.DATA_DIR
        except FileNotFoundError as e:
            print(type(e).__name__, e)
        else:
            raise SystemExit(f"DATA_DIR resolved to {paths.DATA_DIR}")
        """, installed, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    message = result.stdout
    assert message.startswith("CourseFilesNotFoundError")
    assert str((installed / "clipcourse").resolve()) in message, "the message should say where it is installed"
    assert "CLIPCOURSE_ROOT" in message and "pip install -e ." in message


@pytest.mark.slow
@pytest.mark.parametrize("how", ["env", "cwd"])
def test_installed_copy_finds_the_checkout(installed, tmp_path, how):
    env = {paths.ENV_VAR: str(CHECKOUT)} if how == "env" else {}
    cwd = tmp_path if how == "env" else CHECKOUT / "notebooks"   # a learner who started JupyterLab there
    result = _run_installed("""
        from clipcourse import paths
        print(paths.PACKAGE_DIR)
        print(paths.ROOT)
        print(paths.DATA_DIR)
        """, installed, cwd=cwd, **env)
    assert result.returncode == 0, result.stderr
    package_dir, root, data_dir = result.stdout.splitlines()
    assert Path(package_dir) == (installed / "clipcourse").resolve()
    assert Path(root) == CHECKOUT and Path(data_dir) == CHECKOUT / "data"


def test_checkout_found_from_any_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.ROOT == CHECKOUT == paths.course_root()
    assert paths.DATA_DIR == CHECKOUT / "data"
    assert (paths.NOTEBOOKS_DIR / "00_welcome.ipynb").is_file()


def test_env_var_is_honoured_first(monkeypatch, tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "data").mkdir()
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
    assert paths.ROOT == tmp_path.resolve()
    assert paths.DATA_DIR == tmp_path.resolve() / "data"
    assert paths.NOTEBOOKS_DIR == tmp_path.resolve() / "notebooks"


def test_env_var_without_the_course_files_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="CLIPCOURSE_ROOT=.*nowhere.*notebooks/ and data/"):
        paths.DATA_DIR


def test_installed_away_uses_the_working_directory_or_says_what_to_do(monkeypatch, tmp_path):
    away = tmp_path / "site-packages" / "clipcourse"
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    monkeypatch.setattr(paths, "PACKAGE_DIR", away)
    monkeypatch.chdir(CHECKOUT / "notebooks")
    assert paths.ROOT == CHECKOUT
    monkeypatch.chdir(tmp_path)
    with pytest.raises(paths.CourseFilesNotFoundError) as err:
        paths.NOTEBOOKS_DIR
    assert str(away) in str(err.value) and "CLIPCOURSE_ROOT" in str(err.value)
    assert "pip install -e ." in str(err.value)


def test_unknown_attribute_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="nonsense"):
        paths.nonsense


def _package_imports() -> dict[str, set[str]]:
    """For each clipcourse module, the clipcourse modules it imports anywhere in its code."""
    import ast

    graph = {}
    for path in sorted((CHECKOUT / "clipcourse").rglob("*.py")):
        name = ".".join(path.relative_to(CHECKOUT).with_suffix("").parts).removesuffix(".__init__")
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rpartition(".")[0]
                target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
                candidates = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            found |= {c for c in candidates if c.startswith("clipcourse.") and c != name}
        graph[name] = found
    return {k: {v for v in vs if v in graph} for k, vs in graph.items()}


def test_package_modules_import_each_other_without_cycles():
    """One concept per module, readable top to bottom: no module needs one that needs it back
    (data and text once did, through a lazy import)."""
    graph = _package_imports()
    assert "clipcourse.data" in graph and "clipcourse.text" in graph
    state: dict[str, int] = {}

    def visit(node, path):
        if state.get(node) == 1:
            cycle = path[path.index(node):] + [node]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt != "clipcourse":
                visit(nxt, path + [node])
        state[node] = 2

    for module in graph:
        visit(module, [])
