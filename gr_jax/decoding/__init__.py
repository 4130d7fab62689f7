"""Diverse (group) beam search with Hugging Face 4.56 semantics, and item constraints."""

from gr_jax.decoding.beam_search import (SearchSpec, beam_search, beam_search_core, gather_beams,
                                         trace_count)
from gr_jax.decoding.constraints import (AtomicItemConstraint, PrefixTrieConstraint,
                                         sequences_to_items)

__all__ = ["AtomicItemConstraint", "PrefixTrieConstraint", "SearchSpec", "beam_search",
           "beam_search_core", "gather_beams", "sequences_to_items", "trace_count"]
