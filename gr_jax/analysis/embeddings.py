"""t-SNE of item embeddings (scikit-learn), coloured by cluster or genre, as a PNG."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from gr_jax.analysis import report


def item_embedding_matrix(model, catalog) -> np.ndarray:
  """Each item's vector in a T5's input embedding (`T5.token_embeddings()`), catalogue order:
  `[items, d_model]`, float32.

  Atomic IDs: the row of the item's own token. Semantic IDs: the mean of the rows of the item's
  tokens_per_item ID tokens (`catalog.item_tokens`: its code tokens, and its disambiguation token
  when it has one). Why the mean: it uses only the item's own ID tokens, weighs every position
  equally, and for a one-token ID it is that token's row (so atomic IDs give what they always
  did). It is not a learned per-item vector: items that share code prefixes share rows and lie
  closer by construction, so a semantic t-SNE shows the code structure as well as what training
  added. `item_embedding_note` names the choice in the analysis output.
  """
  table = model.token_embeddings()
  tokens = catalog.item_tokens(np.arange(catalog.num_items))  # [items, tokens_per_item]
  total = int(tokens.max(initial=catalog.token_offset - 1)) + 1
  if table.shape[0] < total:
    raise ValueError(
      f"the model's embedding has {table.shape[0]} rows; items need rows up to {total} "
      f"(token_offset {catalog.token_offset} + {catalog.num_id_tokens} "
      f"{catalog.id_scheme} ID tokens)"
    )
  rows = np.asarray(table[catalog.token_offset : total], np.float32)  # [id tokens, d_model]
  return rows[tokens - catalog.token_offset].mean(axis=1)  # [items, d_model]


def item_embedding_note(catalog) -> str:
  """How `item_embedding_matrix` defines an item's vector for this catalogue (for the outputs)."""
  if catalog.tokens_per_item == 1:
    return "the input-embedding row of the item's token"
  return (
    f"the mean of the input-embedding rows of the item's {catalog.tokens_per_item} "
    f"{catalog.id_scheme} ID tokens"
  )


def tsne(embeddings: np.ndarray, *, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
  """2-D t-SNE coordinates `[items, 2]` (PCA init, deterministic for a seed).

  On one OpenMP thread: scikit-learn's Barnes-Hut gradient spins a thread per core, and on a CPU
  that other processes share (a study's stages, test workers) its iterations stall; measured on the
  project's 2-core CPU at load 6, 698 items: 98 s on every core, 17 s on one (BUILD_NOTES, ninth
  session). The coordinates are the same bit for bit (tests/analysis/test_analysis.py)."""
  from sklearn.manifold import TSNE
  from threadpoolctl import threadpool_limits

  x = np.asarray(embeddings, np.float32)
  perplexity = min(perplexity, max(1.0, (x.shape[0] - 1) / 3))  # sklearn needs perplexity < n
  with threadpool_limits(limits=1):
    return TSNE(
      n_components=2, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto"
    ).fit_transform(x)


def tsne_plot(
  path: str,
  embeddings: np.ndarray,
  labels: Sequence | None = None,
  *,
  title: str = "item embeddings (t-SNE)",
  perplexity: float = 30.0,
  seed: int = 0,
  max_legend: int = 20,
) -> np.ndarray:
  """Writes a scatter PNG coloured by label (cluster, genre); returns the 2-D coordinates."""
  xy = tsne(embeddings, perplexity=perplexity, seed=seed)
  plt = report.pyplot()
  fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
  if labels is None:
    ax.scatter(xy[:, 0], xy[:, 1], s=6)
  else:
    labels = [str(l) for l in labels]
    if len(labels) != len(xy):
      raise ValueError(f"{len(labels)} labels for {len(xy)} items")
    uniq = sorted(set(labels))
    cmap = plt.get_cmap("tab20" if len(uniq) > 10 else "tab10")
    for n, lab in enumerate(uniq):
      m = np.asarray([l == lab for l in labels])
      ax.scatter(
        xy[m, 0],
        xy[m, 1],
        s=6,
        color=cmap(n % cmap.N),
        label=lab if len(uniq) <= max_legend else None,
      )
    if len(uniq) <= max_legend:
      ax.legend(fontsize=6, markerscale=2, loc="best")
  ax.set_title(title)
  ax.set_xticks([])
  ax.set_yticks([])
  fig.tight_layout()
  import os

  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return xy


def item_labels(catalog, key: str = "cluster") -> list[str]:
  """Per-item label from catalogue metadata: `cluster` (simulator) or the first of `genres`."""
  out = []
  for m in catalog.metadata:
    v = m.get(key, m.get("genres", m.get("genre", "?")))
    if isinstance(v, (list, tuple)):
      v = v[0] if v else "?"
    elif isinstance(v, str) and "|" in v:
      v = v.split("|")[0]
    out.append(str(v))
  return out
