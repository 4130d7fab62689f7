"""Analyses across runs: `stats` (paired tests, Holm/Bonferroni), `popularity` (H1: KL, head /
torso / tail recall), `cooccurrence` (H2: item-pair co-occurrence in predictions), `embeddings`
(t-SNE PNG), `item_cap` (per-item cap study), `report` (markdown tables, Agg plots)."""
