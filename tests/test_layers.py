"""The floors: packages of gr_jax import only downward (README "Code layout").

An AST walk over every module, so function-local imports count as much as top-level ones. A layer
may import from its own layer and the layers below it. Imports that still run upward are listed
in KNOWN_UPWARD, each with its importing module: they are debts (issue 27), and the list may only
shrink: a new upward import, or a listed one that has gone, fails here.
"""

from __future__ import annotations

import ast
import os
import shutil

import pytest

import gr_jax

PACKAGE_DIR = os.path.dirname(gr_jax.__file__)

# Lowest first. A unit is a subpackage or a top-level module of gr_jax.
LAYERS: tuple[tuple[str, ...], ...] = (
  ("schema", "workdir", "workdir_lock", "config_check", "runtime"),
  ("model", "decoding"),
  ("data",),
  ("checkpointing", "training", "evaluation"),
  ("baselines", "analysis"),
  ("study", "bench"),
  ("train", "prepare", "evaluate", "reproduce", "stats", "add_items", "embed_items"),
)
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}

# (importing module, imported unit): upward imports that exist today and must go (issue 27).
KNOWN_UPWARD: set[tuple[str, str]] = set()
# Same-layer pairs that import each other (a circle): also debts, also only allowed to shrink.
KNOWN_CIRCLES: set[frozenset[str]] = set()


def _module_name(path: str, package_dir: str) -> str:
  rel = os.path.relpath(path, os.path.dirname(package_dir))[:-3].replace(os.sep, ".")
  return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
  if isinstance(node, ast.Import):
    return [a.name for a in node.names]
  if isinstance(node, ast.ImportFrom):
    if node.level:
      parts = module.split(".")
      base = parts[: len(parts) - node.level + (1 if is_package else 0)]
      root = ".".join(base + ([node.module] if node.module else []))
    else:
      root = node.module or ""
    return [root] + [f"{root}.{a.name}" for a in node.names]
  return []


def _unit(name: str) -> str | None:
  parts = name.split(".")
  if parts[0] != "gr_jax" or len(parts) < 2:
    return None
  return parts[1] if parts[1] in LAYER_OF else None


def import_edges(package_dir: str = PACKAGE_DIR) -> set[tuple[str, str]]:
  """{(importing module, imported unit)} over every import statement of the package."""
  edges = set()
  for dirpath, _, files in os.walk(package_dir):
    for f in files:
      if not f.endswith(".py"):
        continue
      path = os.path.join(dirpath, f)
      module = _module_name(path, package_dir)
      if _unit(module) is None:  # gr_jax/__init__.py: the package itself, above every layer
        continue
      with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
      for node in ast.walk(tree):
        for name in _imported(node, module, f == "__init__.py"):
          unit = _unit(name)
          if unit is not None and unit != _unit(module):
            edges.add((module, unit))
  return edges


def layer_violations(edges) -> tuple[set, set]:
  """(upward imports, same-layer circles) found in `edges`."""
  upward = {(m, u) for m, u in edges if LAYER_OF[u] > LAYER_OF[_unit(m)]}
  units = {(_unit(m), u) for m, u in edges}
  circles = {
    frozenset(p) for p in units if (p[1], p[0]) in units and LAYER_OF[p[0]] == LAYER_OF[p[1]]
  }
  return upward, circles


def test_every_unit_has_a_layer():
  units = {
    n[:-3] if n.endswith(".py") else n
    for n in os.listdir(PACKAGE_DIR)
    if not n.startswith(("_", ".")) and (n.endswith(".py") or os.path.isdir(f"{PACKAGE_DIR}/{n}"))
  }
  assert units - set(LAYER_OF) == set(), "add the new module or package to LAYERS"


def test_imports_run_only_downward():
  upward, circles = layer_violations(import_edges())
  assert upward - KNOWN_UPWARD == set(), "imports that run up the layers (README Code layout)"
  assert circles - KNOWN_CIRCLES == set(), "packages that import each other"
  # The debts may only shrink: a fixed one leaves the list too.
  assert KNOWN_UPWARD - upward == set(), "remove the fixed entries from KNOWN_UPWARD"
  assert KNOWN_CIRCLES - circles == set(), "remove the fixed entries from KNOWN_CIRCLES"


@pytest.mark.parametrize(
  "planted",
  [
    ("model/_planted.py", "def f():\n  from gr_jax.study import runner\n"),
    ("data/_planted.py", "import gr_jax.training.loop\n"),
    ("decoding/_planted.py", "from ..evaluation import evaluator\n"),
  ],
)
def test_a_planted_upward_import_is_found(tmp_path, planted):
  """The check sees function-local, absolute and relative imports (on a copy of the package)."""
  copy = tmp_path / "gr_jax"
  shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
  rel, source = planted
  (copy / rel).write_text(source)
  upward, _ = layer_violations(import_edges(str(copy)))
  assert any(m.endswith("._planted") for m, _ in upward - KNOWN_UPWARD), upward
