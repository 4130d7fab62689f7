"""Every knob of configs/base.py is read somewhere in gr_jax/ (a static check over the source text).

A knob that no code reads is a promise the project does not keep: changing it silently does
nothing. For each leaf `a.b.c` of the base config the check accepts any of
- a dotted suffix of two or more components in the source (`b.c`, `a.b.c`: `config.b.c`, the
  string "a.b.c" in a list of fields, a `--config.a.b.c` override in a docstring does not count
  because docstrings are stripped first);
- the leaf read from a section under another name: `x.c`, `x.get("c")`, `x["c"]`,
  `getattr(x, "c")`.
The second form is loose (`x.seed` matches any `seed` attribute), so the check finds knobs nobody
reads at all, the common kind of dead knob; it cannot prove that a knob is read from the right
section.
"""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize

import ml_collections

import pytest

from configs import base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "gr_jax")
# Modules that name every knob without using it: validating a value is not reading it.
NOT_READERS = ("config_check.py",)

# Knobs read without their name in the source (a whole section handed on and read key by key
# elsewhere, a name built at run time): dotted name -> why. None today: `model.overrides` is such a
# section but is itself named where the model is built, and sections handed to the baselines are
# read field by field. An entry that the scan does find is an error (the list stays minimal).
DYNAMIC: dict[str, str] = {}


def _leaves(config: ml_collections.ConfigDict, prefix: str = ""):
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict) and len(value):
      yield from _leaves(value, name + ".")
    else:
      yield name


def _code_text(path: str) -> str:
  """The file's code without comments and docstrings: a knob named only in prose is not read."""
  with open(path, encoding="utf-8") as f:
    src = f.read()
  docstrings = set()
  for node in ast.walk(ast.parse(src)):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
      ):
        docstrings.add((body[0].lineno, body[0].col_offset))
  out = []
  for tok in tokenize.generate_tokens(io.StringIO(src).readline):
    if tok.type == tokenize.COMMENT:
      continue
    if tok.type == tokenize.STRING and tok.start in docstrings:
      continue
    out.append(tok.string)
  return " ".join(out)


def _source_text() -> str:
  texts = []
  for dirpath, _, files in os.walk(SOURCE):
    for name in sorted(files):
      if name.endswith(".py") and name not in NOT_READERS:
        texts.append(_code_text(os.path.join(dirpath, name)))
  return "\n".join(texts)


def _is_read(name: str, text: str) -> bool:
  parts = name.split(".")
  for n in range(len(parts), 1, -1):
    # Tokens are joined by spaces above, so `config.eval.kl_eps` reads `config . eval . kl_eps`.
    dotted = r"\s*\.\s*".join(re.escape(p) for p in parts[-n:])
    quoted = re.escape(".".join(parts[-n:]))
    if re.search(rf"\b{dotted}\b", text) or re.search(rf"[\"']{quoted}[\"']", text):
      return True
  leaf = re.escape(parts[-1])
  patterns = (
    rf"[\w)\]]\s*\.\s*{leaf}\b",  # section.leaf
    rf"\.\s*get\s*\(\s*[\"']{leaf}[\"']",  # section.get("leaf", ...)
    rf"\[\s*[\"']{leaf}[\"']\s*\]",  # section["leaf"]
    rf"getattr\s*\([^,()]+,\s*[\"']{leaf}[\"']",  # getattr(section, "leaf", ...)
  )
  return any(re.search(p, text) for p in patterns)


@pytest.mark.slow
def test_allow_list_names_real_knobs_the_scan_cannot_see():
  leaves = set(_leaves(base.get_config()))
  assert not set(DYNAMIC) - leaves, "allow-listed knobs that configs/base.py no longer has"
  text = _source_text()
  assert not [n for n in DYNAMIC if _is_read(n, text)], "allow-listed knobs the scan finds"


@pytest.mark.slow
def test_every_base_knob_is_read_by_gr_jax():
  text = _source_text()
  dead = [n for n in _leaves(base.get_config()) if n not in DYNAMIC and not _is_read(n, text)]
  assert not dead, (
    f"configs/base.py knobs that no code in gr_jax/ reads: {dead}; wire each to "
    "the code its comment names, or delete it"
  )


def test_the_check_catches_a_dead_knob():
  text = "def f(config):\n  return config.eval.ks, ev.get('kl_eps'), getattr(d, 'item_cap', 0)\n"
  assert _is_read("eval.ks", text)
  assert _is_read("eval.kl_eps", text)
  assert _is_read("data.item_cap", text)
  assert not _is_read("data.worker_count", text)
  # Named only in a string tuple of field names (not a dotted config path): not a read.
  assert not _is_read("data.worker_count", 'KEYS = ("shuffle", "worker_count")')
