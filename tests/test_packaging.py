"""The package's shape: one top-level name, and kernels that know nothing of the API."""
import ast
import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_kernels_never_import_the_api():
    for path in sorted((ROOT / "kernels").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name} imports from outside kernels/"
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith("fastopt"), f"{path.name} imports {name}"


def test_wheel_has_one_top_level_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("fastopt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"fastopt"}
    for module in ("rules", "variants", "cpu", "cuda"):
        assert f"fastopt/kernels/{module}.py" in names
    # Every source of the package ships (a subpackage missing from
    # pyproject's list would import in a checkout and fail once installed).
    sources = {str(path.relative_to(ROOT)) for path in (ROOT / "fastopt").rglob("*.py")}
    assert sources <= set(names)


def test_installed_kernels_are_the_fastopt_subpackage():
    import fastopt.kernels
    assert fastopt.kernels.__name__ == "fastopt.kernels"
    assert pathlib.Path(fastopt.kernels.__file__).parent.name == "kernels"
