"""Shared pytest fixtures (kept small: each package's tests own their helpers)."""

import os

import jax
import pytest

# The longest test files (measured, BUILD_NOTES "Test suite"), started first: `make test` runs the
# files in parallel processes (pytest-xdist, --dist loadfile), which take files in collection order,
# so a long file collected last would run alone at the end while the other process idles
# (`--no-loadscope-reorder` keeps this order; xdist would otherwise put the files with the most
# tests first).
LONGEST_FIRST = (
  "tests/study/test_real_data_configs.py",
  "tests/study/test_end_to_end.py",
  "tests/benchmark/test_gpu_matrix_smoke.py",
  "tests/training/test_multidevice.py",
  "tests/training/test_recipe_learns.py",
  "tests/baselines/test_resume_kill_baseline.py",
  "tests/training/test_resume_kill.py",
  "tests/benchmark/test_bench_end_to_end.py",
  "tests/training/test_step.py",
  "tests/data/test_semantic_ids.py",
  "tests/model/test_t5.py",
  "tests/data/test_cold_start.py",
  "tests/training/test_loop.py",
  "tests/baselines/test_sequential.py",
)


def pytest_collection_modifyitems(config, items):
  """Moves the tests of LONGEST_FIRST to the front, in that order; the rest keep theirs."""
  del config
  rank = {path: i for i, path in enumerate(LONGEST_FIRST)}

  def key(item):
    path = item.nodeid.split("::", 1)[0]
    return rank.get(path, len(rank))

  items.sort(key=key)  # stable: each file's tests, and the other files, keep their order


@pytest.fixture(scope="session")
def hf_t5_factory(tmp_path_factory):
  """Builds, saves and caches tiny random Hugging Face T5 models.

  `hf_t5_factory(seed=0, max_shard_size=None, **config_fields) -> (directory, torch model)`.
  Needs torch + transformers (test-only references); skips the test when they are missing.
  """
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  cache = {}

  def make(seed=0, max_shard_size=None, **fields):
    key = (seed, max_shard_size, tuple(sorted(fields.items())))
    if key in cache:
      return cache[key]
    base = dict(
      vocab_size=97,
      d_model=24,
      d_kv=8,
      d_ff=40,
      num_layers=2,
      num_heads=3,
      relative_attention_num_buckets=8,
      relative_attention_max_distance=20,
      dropout_rate=0.0,
      feed_forward_proj="relu",
      tie_word_embeddings=True,
      decoder_start_token_id=0,
      pad_token_id=0,
      eos_token_id=1,
    )
    base.update(fields)
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**base)).eval()
    path = str(tmp_path_factory.mktemp(f"hf_t5_{seed}"))
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(path, safe_serialization=True, **kwargs)
    cache[key] = (path, model)
    return cache[key]

  return make


@pytest.fixture(scope="session", autouse=True)
def shared_compilation_cache(tmp_path_factory):
  """One persistent compilation cache for the whole run: every test process (the xdist workers
  share the run's directory) and every subprocess they start (through the environment: the
  binaries read GR_JAX_COMPILATION_CACHE, plain jax JAX_COMPILATION_CACHE_DIR) load a program
  another test already compiled instead of compiling it again. Every program, however fast it
  compiles (the tests' models are tiny)."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # pytest-<n>/popen-gw<k>: the run's directory, shared by the workers
  path = str(base / "jax_cache")
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  env = {
    "GR_JAX_COMPILATION_CACHE": path,
    "JAX_COMPILATION_CACHE_DIR": path,
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
  }
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  yield path
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
