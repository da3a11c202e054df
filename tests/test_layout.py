"""The package's shape: imports run one way, `import torch_tier` is light, constants have one source."""

import ast
import math
import subprocess
import sys
from pathlib import Path

import pytest

import torch_tier
from torch_tier import _C, tiers, timing

PACKAGE = Path(torch_tier.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """torch_tier modules that `path` imports when it is imported (module level, TYPE_CHECKING included):
    `from X import y` is an edge to X.y where that is a module, else to X."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text())
    for node in tree.body + [n for top in tree.body if isinstance(top, ast.If) for n in top.body]:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("torch_tier")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("torch_tier"):
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in _top_level_imports(path, set(modules)) if m in modules and m != name}
             for name, path in modules.items()}
    for name in graph:  # the package's __init__ is lazy: importing a submodule runs it, but it imports nothing
        graph[name].discard("torch_tier")
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_layers_run_one_way():
    graph = import_graph()
    lower = ["torch_tier.policy", "torch_tier.tiers", "torch_tier.devices", "torch_tier.graph",
             "torch_tier.cost_model"]
    upper = ["torch_tier.runtime", "torch_tier.graph_capture", "torch_tier.timing", "torch_tier.baselines",
             "torch_tier.trainer.erl", "torch_tier.cli"]
    for low in lower:
        assert not graph[low] & set(upper), f"{low} imports from a layer above it"


def _imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout.split()
    return {name.split(".")[0] for name in out}


HEAVY = {"zmq", "scipy", "gymnasium", "matplotlib"}


def test_import_is_light():
    assert not _imported_after("import torch_tier") & (HEAVY | {"torch"})


def test_running_a_policy_loads_no_trainer_baselines_or_plotting():
    code = ("import torch, torch_tier\n"
            "m = torch.nn.Linear(4, 4)\n"
            "with torch_tier.enable(torch_tier.Policy.uniform(m, weight='pm'), m, pm='sim') as s:\n"
            "    m(torch.ones(2, 4))\n"
            "torch_tier.measure(m, torch.ones(2, 4), torch_tier.Policy.uniform(m), pm='sim', repeats=3)")
    assert not _imported_after(code) & HEAVY


def test_tier_constants_match_the_allocator():
    assert _C.TIERS == {name: index for index, name in enumerate(tiers.TIER_NAMES)}
    assert (tiers.DRAM, tiers.PM) == (_C.TIERS["dram"], _C.TIERS["pm"])


@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.95, 0.99])
def test_binomial_quantile_equals_scipys(confidence):
    from scipy.stats import binom

    for n in range(1, 300):
        q = (1 - confidence) / 2
        assert timing.binomial_quantile(q, n) == int(binom.ppf(q, n, 0.5)), n
    assert timing.binomial_quantile(0.0, 5) == 0 and timing.binomial_quantile(1.0, 5) == 5
    assert math.isclose(sum(math.comb(9, k) for k in range(timing.binomial_quantile(0.5, 9) + 1)) / 2**9, 0.5)
