"""gr-jax: generative retrieval (search + recommendation) with one T5 in JAX/Flax."""

__version__ = "0.1.0"
