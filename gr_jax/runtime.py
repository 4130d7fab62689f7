"""Process-wide runtime settings shared by the binaries (logging, the compilation cache)."""

import logging as std_logging
import os


def setup(workdir: str | None = None) -> None:
  """Quiet noisy libraries and share compiled programs across the runs of one study.

  The persistent compilation cache matters on CPU: Gen_S, Gen_R and Gen_R+S of one study have the
  same shapes, so after the first run each train and decode step loads instead of compiling.
  """
  import jax

  for name in ("absl", "orbax", "jax._src.xla_bridge", "jax._src.compilation_cache"):
    std_logging.getLogger(name).setLevel(std_logging.WARNING)
  cache_dir = os.environ.get("GR_JAX_COMPILATION_CACHE")
  if cache_dir is None and workdir is not None:
    cache_dir = os.path.join(workdir, ".jax_cache")
  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    # Every program: a tiny model's steps compile in under half a second each, and a study
    # compiles dozens of them per stage (loading one is ~0.1 s).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# ------------------------------------------------------------------------- binary error handling
from absl import flags as _flags  # noqa: E402  (beside the helper that reads it)

_VERBOSE = _flags.DEFINE_bool(
  "verbose",
  False,
  "on an error, show the Python traceback above the one-line message (also GR_JAX_VERBOSE=1)",
)


def verbose() -> bool:
  """--verbose, or GR_JAX_VERBOSE=1 (which also works before flags are parsed)."""
  if os.environ.get("GR_JAX_VERBOSE", "").strip().lower() in ("1", "true", "yes"):
    return True
  return bool(_flags.FLAGS.is_parsed() and _VERBOSE.value)


def _is_expected(e: BaseException) -> bool:
  """Bad input, bad config, a missing file, a full disk or one of the project's own errors."""
  if isinstance(e, (ValueError, KeyError, OSError)):
    return True
  return any(cls.__module__.split(".")[0] == "gr_jax" for cls in type(e).__mro__)


def _enospc(e: BaseException) -> OSError | None:
  """The ENOSPC OSError in e's cause/context chain (libraries re-wrap it), else None."""
  import errno

  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return e
    e = e.__cause__ or e.__context__
  return None


def _size(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if n < 1024 or unit == "TiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return str(n)


def disk_full_message(err: OSError, fallback_path: str | None = None) -> str:
  """One line: the path being written, the free space left on its filesystem, what to do."""
  import shutil

  path = err.filename or fallback_path or os.getcwd()
  probe = os.path.abspath(str(path))
  while not os.path.exists(probe) and os.path.dirname(probe) != probe:
    probe = os.path.dirname(probe)  # the file itself may not exist (its write failed)
  try:
    usage = shutil.disk_usage(probe)
    space = f"{_size(usage.free)} free of {_size(usage.total)} on the filesystem of {probe}"
  except OSError:
    space = f"free space of {probe} unknown"
  return (
    f"{path}: no space left on device while writing ({space}); free some space (more "
    "than this file needs) and rerun the same command: finished work is kept"
  )


def one_line(e: BaseException) -> str:
  msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
  msg = " ".join(str(msg).split())
  return msg or type(e).__name__


def main_guard(fn, *, path_hint=None, note: str = ""):
  """Wraps a binary's absl main: expected errors become `error: <one line>` and exit code 1.

  path_hint() names the directory the binary writes to, for a disk-full error whose OSError
  carries no file name. note is appended in brackets (e.g. "rerun to continue").
  With --verbose or GR_JAX_VERBOSE=1 the traceback is printed first.
  """
  import functools
  import sys
  import traceback

  @functools.wraps(fn)
  def guarded(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except Exception as e:  # pylint: disable=broad-except  (re-raised unless expected)
      full = _enospc(e)
      if full is None and not _is_expected(e):
        raise
      if verbose():
        traceback.print_exc()
      if full is not None:
        hint = None
        try:
          hint = path_hint() if path_hint else None
        except Exception:  # pylint: disable=broad-except  (the hint is best effort)
          pass
        msg = disk_full_message(full, hint)
      else:
        msg = one_line(e)
      print(f"error: {msg}" + (f" ({note})" if note else ""), file=sys.stderr)
      sys.exit(1)

  return guarded


def validate_config(config) -> None:
  """The config check every binary runs before any work (gr_jax.config_check)."""
  from gr_jax import config_check

  config_check.validate(config)


# ------------------------------------------------------------------------- flag parsing
def _config_flag_values(argv: list[str], name: str) -> tuple[str | None, list[str]]:
  """(the value of --<name> in argv, the dotted keys of its --<name>.KEY overrides)."""
  path, keys = None, []
  for i, arg in enumerate(argv):
    if arg == "--":
      break
    bare = arg.lstrip("-")
    if not arg.startswith("-"):
      continue
    if bare == name and i + 1 < len(argv):
      path = argv[i + 1]
    elif bare.startswith(name + "="):
      path = bare[len(name) + 1 :]
    elif bare.startswith(name + "."):
      keys.append(bare[len(name) + 1 :].split("=", 1)[0])
  return path, keys


def unknown_override_message(argv: list[str]) -> str | None:
  """One line for the first `--config.KEY` override of argv that names no key of its config file
  (with the closest real key), or None when there is none or the config cannot be read here."""
  from gr_jax import config_check  # pylint: disable=g-import-not-at-top

  try:
    from ml_collections.config_flags.config_flags import is_config_flag  # pylint: disable=g-import-not-at-top

    flag_items = _flags.FLAGS._flags().items()  # pylint: disable=protected-access
    names = [n for n, f in flag_items if is_config_flag(f)]
  except (ImportError, AttributeError):
    return None
  for name in names:
    path, keys = _config_flag_values(argv, name)
    if path is None or not keys:
      continue
    try:
      config = _flags.FLAGS[name].parser.parse(path)
    except Exception:  # pylint: disable=broad-except  (absl reports a bad config file itself)
      return None
    for key in keys:
      try:
        msg = config_check.unknown_key_message(config, key, flag=f"--{name}.")
      except Exception:  # pylint: disable=broad-except  (a diagnosis, never a new error)
        return None
      if msg is not None:
        return msg
  return None


def run_app(main, *, path_hint=None, note: str = "", argv: list[str] | None = None) -> None:
  """`app.run(main_guard(main, ...))` for a binary, plus one `error:` line (exit 1) for a
  `--config.KEY=VALUE` override naming a key the config does not have: ml_collections raises
  that while absl parses the flags, before main_guard runs, as three chained tracebacks."""
  import sys
  import traceback

  from absl import app  # pylint: disable=g-import-not-at-top

  argv = list(sys.argv if argv is None else argv)
  try:
    app.run(main_guard(main, path_hint=path_hint, note=note), argv=argv)
  except (AttributeError, KeyError, TypeError, ValueError):
    if _flags.FLAGS.is_parsed():
      raise  # raised by main, after parsing: main_guard already decided
    msg = unknown_override_message(argv)
    if msg is None:
      raise
    if verbose() or "--verbose" in argv:
      traceback.print_exc()
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)
