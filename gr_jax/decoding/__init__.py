"""Diverse (group) beam search with Hugging Face 4.56 semantics, exact top-K for atomic item IDs,
and item constraints."""

from gr_jax.decoding.beam_search import (
  SearchSpec,
  beam_search,
  beam_search_core,
  gather_beams,
  trace_count,
)
from gr_jax.decoding.constraints import (
  AtomicItemConstraint,
  PrefixTrieConstraint,
  exclusion_mask,
  sequences_to_items,
)
from gr_jax.decoding.topk import topk_exact

__all__ = [
  "AtomicItemConstraint",
  "PrefixTrieConstraint",
  "SearchSpec",
  "beam_search",
  "beam_search_core",
  "exclusion_mask",
  "gather_beams",
  "sequences_to_items",
  "topk_exact",
  "trace_count",
]
