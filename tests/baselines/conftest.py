"""Fixtures of the baseline tests."""

import pytest

from tests.baselines.small_data import prepare_small


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """One per test module: the tests change the config they get."""
  return prepare_small(tmp_path_factory)
