"""The package layout: a public API no submodule can shadow, no import cycles, runnable README examples."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import sys
import types
import warnings
from pathlib import Path

import pytest

import landsight

SRC = Path(landsight.__file__).parent
README = SRC.parents[1] / "README.md"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph(*, type_checking: bool = False) -> dict[str, set[str]]:
    """Module -> landsight modules it imports (anywhere in the file; under ``if TYPE_CHECKING`` only if asked)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and _is_type_checking(node) and not type_checking:
                skip.update(id(n) for child in node.body for n in ast.walk(child))
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            for t in targets:
                if t.startswith("landsight"):
                    found = resolve(t)
                    # importing a package's own parent (``landsight``) for __version__ is not an edge
                    if found and found != name and found != "landsight":
                        graph[name].add(found)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "landsight.classify.train" in graph and graph["landsight.results.maps"]  # the scan saw the package
    assert find_cycles(graph) == []


#: Layers, bottom (0) to top: a module imports from its own layer or lower ones (cycles are refused
#: separately); the tasks (classify, segment) never import each other.
LAYERS: dict[str, int] = {
    **dict.fromkeys(("errors", "cache", "runtime", "progress", "distributed"), 0),
    **dict.fromkeys(("outputs", "recipe", "ranges", "console"), 1),
    "data": 2,
    **dict.fromkeys(("bundle", "predictions", "tracking", "vectors", "styles", "runconfig"), 3),
    "models": 4,
    **dict.fromkeys(("classify", "segment"), 5),  # the tasks: never each other
    **dict.fromkeys(("quantize", "spark", "serve", "results"), 6),  # dispatchers, engines, looking at results
    **dict.fromkeys(("maps", "change", "report", "dedup"), 6),  # deprecation shims of results/
    **dict.fromkeys(("cli", "__main__"), 7),
}


def _room(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_imports_flow_one_way_including_type_checking_imports() -> None:
    graph = import_graph(type_checking=True)
    rooms = {_room(m) for m in graph} - {""}
    assert rooms <= set(LAYERS), f"rooms without a layer: {sorted(rooms - set(LAYERS))}"
    upward = [
        (a, b) for a, targets in graph.items() for b in targets
        if _room(a) and _room(b) and _room(a) != _room(b)
        and (LAYERS[_room(a)] < LAYERS[_room(b)] or LAYERS[_room(a)] == LAYERS[_room(b)] == LAYERS["classify"])
    ]  # fmt: skip
    assert upward == [], f"imports that do not flow down: {upward}"
    assert find_cycles(graph) == []


def test_modules_stay_small_or_say_why() -> None:
    """No module over 500 lines, unless its docstring says why ("Longer than 500 lines because ...")."""
    long = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        if text.count("\n") > 500 and "Longer than 500 lines because" not in doc:
            long.append(f"{path.relative_to(SRC)} ({text.count(chr(10))} lines)")
    assert long == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_public_api_is_never_shadowed_by_a_submodule() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the deprecated aliases (MOVED) warn on import
        for info in pkgutil.walk_packages(landsight.__path__, "landsight."):
            importlib.import_module(info.name)
    assert set(landsight.__all__) >= {
        "train", "finetune", "evaluate", "predict", "featurize", "train_segmentation", "predict_raster",
        "evaluate_rasters", "load_bundle", "load_predictions", "prediction_map", "compare_predictions",
        "build_report", "find_duplicates", "build_catalog", "read_image", "cut_tiles", "create_backbone",
    }  # fmt: skip
    for name in landsight.__all__:
        if name == "__version__":
            continue
        for _ in range(2):
            value = getattr(landsight, name)
            assert not isinstance(value, types.ModuleType), name
            assert callable(value) and value.__name__ == name, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = landsight.nope


#: Deprecated module paths (named in older READMEs) -> where the module lives now.
MOVED = {
    "landsight.maps": "landsight.results.maps",
    "landsight.change": "landsight.results.change",
    "landsight.report": "landsight.results.report",
    "landsight.dedup": "landsight.results.dedup",
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_moved_modules_warn_and_reexport_the_new_module(old: str) -> None:
    new = importlib.import_module(MOVED[old])
    sys.modules.pop(old, None)  # imported (warning once) by another test: import it afresh
    with pytest.warns(DeprecationWarning, match=re.escape(MOVED[old])):
        alias = importlib.import_module(old)
    assert alias.__all__ == new.__all__ and new.__all__
    for name in new.__all__:
        assert getattr(alias, name) is getattr(new, name), name


def readme_python_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if "import landsight" in b and "TorchDistributor" not in b]


def test_readme_python_examples_run(
    tmp_path: Path, small_dataset: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's Python examples, on real images (paths swapped for real ones, epochs cut to one)."""
    blocks = readme_python_blocks()
    assert len(blocks) >= 2, "the README has lost its Python examples"
    tiles = sorted(small_dataset.rglob("*.jpg"))
    ches = shared_data / "chesapeake"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    for code in blocks:
        code = (
            code.replace('"eurosat_rgb/"', repr(str(small_dataset)))
            .replace('"more_labelled_tiles/"', repr(str(small_dataset)))
            .replace('["tile1.png", "tile2.tif"]', repr([str(tiles[0]), str(tiles[-1])]))
            .replace('"naip/*.tif"', repr(str(ches / "train/images/*.tif")))
            .replace('"labels/*_lc.tif"', repr(str(ches / "train/labels/*_lc.tif")))
            .replace("epochs=20, context=128,", "epochs=1, context=32, chip_size=64, chips_per_epoch=8, val_chips=4,")
            .replace('"big_naip.tif"', repr(str(ches / "tile_downsampled/m_3907833_nw_17_1_naip-new.tif")))
        )
        namespace: dict[str, object] = {}
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
        if "metrics" in namespace:
            assert 0 <= namespace["metrics"]["accuracy"] <= 1
        if "table" in namespace:
            assert len(namespace["table"]) == 2
    assert (tmp_path / "landcover.tif").is_file() and (tmp_path / "probs.tif").is_file()
