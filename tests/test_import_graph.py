"""The package's import graph: layers, and no cycles.

Read from the sources (every import statement, at module level or inside a
function), so that an import added anywhere is seen without running it.
"""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = {"fastopt": ROOT / "fastopt", "fastopt.kernels": ROOT / "kernels"}


def _modules():
    """Module name -> source path, for every module of the package."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _imports(name, path):
    """The package's modules that module `name` imports."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + is_package]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            # `from package import module` imports the module itself.
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _is_submodule_of(module, package):
    return module.startswith(package + ".")


def test_the_graph_was_read():
    assert "fastopt._facts" in GRAPH["fastopt._checks"]
    assert "fastopt._multi" in GRAPH["fastopt._dispatch"]
    assert "fastopt.kernels.rules" in GRAPH["fastopt.kernels.variants"]


def test_no_import_cycles():
    """A package's ``__init__`` importing its own modules is not a cycle;
    any other path back to where it started is."""
    def edges(name):
        return [m for m in GRAPH[name] if not _is_submodule_of(name, m)]

    state = {}      # name -> "open" while on the path, "done" after

    def visit(name, path):
        state[name] = "open"
        for m in edges(name):
            if state.get(m) == "open":
                cycle = path[path.index(m):] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m, path + [m])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def test_kernels_know_nothing_of_the_api():
    for name, imported in GRAPH.items():
        if name == "fastopt.kernels" or _is_submodule_of(name, "fastopt.kernels"):
            outside = [m for m in imported if not (
                m == "fastopt.kernels" or _is_submodule_of(m, "fastopt.kernels"))]
            assert outside == [], f"{name} imports {outside}"


def test_pipeline_layers():
    """describe/validate below plan/run: the array facts and the checker
    import nothing of the paths that use them, and the list path does not
    reach back into the single-array one."""
    below = {"fastopt._facts": {"fastopt._device"},
             "fastopt._checks": {"fastopt._facts", "fastopt._front"},
             "fastopt._front": set(),
             "fastopt._batch": set()}
    for name, allowed in below.items():
        ours = {m for m in GRAPH[name] if not _is_submodule_of(m, "fastopt.kernels")
                and m != "fastopt.kernels"}
        assert ours <= allowed, f"{name} imports {sorted(ours - allowed)}"
    assert "fastopt._dispatch" not in GRAPH["fastopt._multi"]
    # Front ends reach the pipeline through the functional API and its layers.
    for front in ("fastopt.optimizers.base", "fastopt.torch._base"):
        assert "fastopt._dispatch" not in GRAPH[front]
