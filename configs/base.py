"""Every knob of gr-jax with its default and a one-line comment.

Experiment configs (quickstart.py, movielens.py, ...) start from `get_config()` here and change
what they need. Binaries take `--config configs/<name>.py[:arg]` plus `--config.a.b=value`
overrides (ml_collections config_flags). Sections are owned by the package named beside them.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.name = "base"  # experiment name, shown in logs and reports
  c.seed = 0  # model init, dropout and data shuffling seed of a run

  # ---------------------------------------------------------------- data (gr_jax/data)
  c.data = d = ml_collections.ConfigDict()
  d.source = "simulate"  # simulate | movielens | mpd | jsonl | tfds_movielens
  d.path = ""  # raw data location (directory or zip) for real-data sources
  d.processed_dir = ""  # a processed dataset dir; empty = <workdir>/data (or the reproduce plan's)
  d.tasks = ("search", "rec")  # which tasks the pipeline mixes: ("search",) Gen_S, ("rec",) Gen_R
  d.task_ratio = 0.0  # 0 = plain concatenation (paper); else fraction of search examples per batch
  d.task_prefix = (
    False  # prepend "search:" / "recommend:" text to inputs (ours; off as in the paper)
  )
  d.item_cap = 0  # per-item cap on the *added* task's training instances (0 = no cap)
  d.item_cap_task = ""  # which task the cap applies to: "" = none, "search" or "rec"
  d.max_query_tokens = 32  # encoder length for search inputs (tokens, EOS included)
  d.max_history = 50  # most recent items kept in a rec input (paper: ours, default 50)
  d.encoder_len = 64  # fixed padded encoder length of every batch (no recompiles)
  # fixed decoder length: <item> </s> for atomic IDs; semantic IDs take theirs from the scheme
  # (codes + EOS, the manifest's decoder_len), whatever this says
  d.decoder_len = 2
  # item IDs: atomic (one new token per item, paper) | semantic (RQ-KMeans code tuples of item
  # embeddings, Penha et al. 2025: `levels` code tokens plus a disambiguation code where tuples
  # collide; gr_jax/data/semantic_ids.py). Needs decode.method=beam (prefix-trie constrained).
  d.id_scheme = "atomic"
  d.semantic = se = ml_collections.ConfigDict()  # read only when id_scheme == "semantic"
  # content (TF-IDF of item title + string metadata, truncated SVD) | file (embedding_file) |
  # search | rec | joint: item vectors of the bi-encoder of baselines.biencoder (tasks replaced by
  # search / rec / search,rec; seed = semantic.seed), trained on the TRAINING splits of the same
  # data with atomic IDs by `python -m gr_jax.embed_items` (reproduce runs it in a cache beside the
  # dataset); its settings then enter the data hash (gr_jax/data/item_embeddings.py)
  se.embedding = "content"
  # file: .npy float [num_items, dim], rows in catalog.json item order; search | rec | joint: the
  # .npy gr_jax.embed_items wrote (not in the data hash: its description pins it to the settings)
  se.embedding_file = ""
  se.content_dim = 64  # content: SVD dimensions (capped by the number of items and words)
  se.normalize = True  # L2-normalise embeddings before quantising (cosine geometry)
  se.levels = 3  # RQ-KMeans levels = code tokens per ID before disambiguation
  # codes per level (<= number of items); ID tokens = levels x this + disamb. 0 = auto: the
  # smallest power of two K with K ** levels >= number of items, within [2, min(256, items)]
  # (78 items, 3 levels: 8; 2,000 items: 16); the manifest's semantic_ids.codebook_size records it
  se.codebook_size = 0
  se.balanced = False  # balanced assignment: every code gets floor/ceil(items / codebook_size)
  se.kmeans_iters = 50  # Lloyd iterations per level (after k-means++ initialisation)
  # Each level fits on at most this many items per code (a seeded sample; FAISS's default), then
  # assigns every item: the same fit cost at 100k or 10M items. 0 = fit on every item. Below
  # 256 x codebook_size items (65,536 at 256 codes) every item is in the fit anyway.
  se.max_points_per_code = 256
  # Spare disambiguation codes per code tuple, so that cold start (python -m gr_jax.add_items) can
  # give an item added after training an ID in a tuple that is already taken, without new tokens.
  # > 0: every ID carries the disambiguation code and the model gets this many more ID tokens
  # (never training targets). 0 = as before: a new item needs a tuple no item has.
  se.reserve_disambiguation = 0
  # k-means++, SVD and (search | rec | joint) bi-encoder seed: the codes are a deterministic
  # function of it
  se.seed = 0
  d.skip_bad_rows = (
    False  # False: bad input is an error naming file/line/field; True: count in manifest
  )
  d.items_in_both_tasks = True  # keep only items that appear in both tasks (paper)
  # Which held-out examples are kept, decided after the splits (gr_jax/data/prepare.py):
  # "trained_in_both" keeps a search valid/test pair or rec valid/test target only if its item is
  # a TRAINING target of both tasks, so no task-specific model is tested on an item only the
  # other task trains (the dropped ones are counted in the manifest's counts); "paper" keeps all
  # (items_in_both_tasks counts search pairs of every split: on ml-latest-small 28% of the search
  # test pairs target items that no search training pair has, all of them rec training targets).
  d.heldout_coverage_rule = "trained_in_both"
  # How prepare splits the search pairs a loader left unassigned (gr_jax/data/prepare.py):
  # "by_query" holds out whole distinct query texts (the fractions below are of distinct
  # queries); "within_item" keeps one training pair per item and holds out a seeded share of
  # the other (query, item) pairs (the fractions are of pairs), each held-out pair its own query
  # with one relevant item, as Penha et al. 2025 split each movie's queries (configs/movielens.py)
  d.search_split = "by_query"
  d.search_valid_fraction = 0.1  # held-out share of distinct queries for search valid (real data)
  d.search_test_fraction = 0.1  # held-out share of distinct queries for search test (real data)
  d.split_seed = 0  # seed of the held-out query split (independent of the run seed)
  d.min_session_len = 3  # shorter sessions are dropped (counted): need train, valid and test
  # tokenizer: a Hugging Face T5 directory with spiece.model, or train a unigram model on the data
  d.tokenizer = ml_collections.ConfigDict()
  d.tokenizer.path = ""  # HF T5 dir (spiece.model); empty = train SentencePiece on query text
  d.tokenizer.vocab_size = 512  # vocabulary of a trained SentencePiece model
  # Most sentences (training queries, one per pair, and item titles) the trained tokenizer sees:
  # above it a seeded uniform sample (its time grows with the text: the full MPD has ~68M).
  # ml-latest-small, ML-25M and the simulator stay below it. 0 = all.
  d.tokenizer.max_sentences = 1_000_000
  # simulator (docs/study_design.md "Simulated data", gr_jax/data/simulate.py); `setting` picks
  # the sweep
  d.sim = s = ml_collections.ConfigDict()
  s.setting = "default"  # default | S1 (popularity) | S2 (search helps rec) | S3 (rec helps search)
  s.seed = 0  # generator seed, all settings (independent of the run seed)
  s.num_items = 200  # all settings: catalogue size
  s.num_clusters = 10  # all settings: latent rec clusters (balanced); content clusters follow them
  s.words_per_cluster = 5  # default/S2/S3: content words owned by each cluster
  s.words_per_item = 3  # all settings: words owned by each item (its title; query words but in S1)
  s.query_words = 3  # all settings: words per search query
  s.num_users = 1000  # default/S1/S3: rec sessions (one per user)
  s.session_len = 8  # all settings: items per session (>= 3; the last two are rec valid and test)
  s.stay_in_cluster = 0.9  # default/S2/S3: probability a session's next item stays in its cluster
  s.zipf_exponent = 1.0  # all settings: Zipf exponent of the item popularities p_R and p_S
  s.queries_per_item = 3  # default/S1/S2: search training queries per item (targets ~ p_S)
  s.shuffle_fraction = 0.5  # all settings: share of p_R's ranks rotated to make p_S (S1 sweeps it)
  s.agreement = 1.0  # all settings: share of clusters whose words follow rec clusters (S2 sweeps)
  s.eval_queries = 200  # all settings: held-out search queries in each of valid and test (~ p_S)
  # all settings: held-out targets of both tasks (search valid/test, rec valid/test) only among
  # items that are training targets of both tasks (paper's item filter); False = all items
  s.heldout_in_both = True
  # S1: every item is a search and a rec training target by construction (one query and one rec
  # target each, the rest drawn so that expected counts keep p_S's / p_R's ratios above a floor of
  # one), so the filter above removes nothing and eligibility and the rec sample size do not move
  # with shuffle_fraction; False = i.i.d. draws by p_S / p_R
  s.s1_cover_all_items = True
  s.s2_num_users = 200  # S2: few sessions per item (replaces num_users)
  s.s3_queries_per_item = 1.0  # S3: few queries per item (replaces queries_per_item)
  s.s3_query_set_size = 3  # S3: relevant items per query: its anchor plus companions (a qrel each)
  # S3 sweeps it: probability that a query's companions are drawn from items co-occurring with its
  # anchor in training sessions, else from the anchor's never-co-occurring decoy pool
  s.query_set_coherence = 1.0
  s.s3_query_cluster_words = False  # S3: queries also use the anchor's cluster words (else not)
  # default setting, coverage variant (needs heldout_in_both=False; a gain built in, not default)
  s.search_side_fraction = 0.0  # default: share of a cluster's items known mostly from search
  s.rec_side_fraction = 0.0  # default: share of a cluster's items known mostly from rec
  s.side_weight = 0.0  # default: popularity multiplier of side items in the other task's training
  # MovieLens (GroupLens CSV layout)
  d.movielens = m = ml_collections.ConfigDict()
  m.min_rating = 0.0  # keep ratings >= this
  m.query_sources = ("tags",)  # any of tags, titles, genres
  m.queries_jsonl = ""  # user-supplied generated queries {"item": movieId, "query": text}
  # drop tags used by fewer DISTINCT users than this (2: a tag private to one user ties that
  # user's movies together, a rec signal posing as a query); counted after held-out tag rows
  # (on the tagging user's rec valid/test movies) are dropped, see gr_jax/data/movielens.py
  m.min_tag_count = 2
  # MPD slices
  d.mpd = ml_collections.ConfigDict()
  d.mpd.max_slices = 0  # 0 = all slices found
  # generic JSONL logs
  d.jsonl = j = ml_collections.ConfigDict()
  j.search_file = "search.jsonl"  # {"query": ..., "item": ...} per line, relative to data.path
  j.sessions_file = "sessions.jsonl"  # {"user": ..., "items": [...], "timestamps": [...]}
  j.items_file = "items.jsonl"  # {"item": ..., "title": ...} per line
  # grain pipeline
  d.shuffle = True  # global shuffle by seed each epoch

  # ---------------------------------------------------------------- model (gr_jax/model)
  c.model = mo = ml_collections.ConfigDict()
  mo.preset = "tiny"  # tiny | small | base | large | flan-t5-small | flan-t5-base | flan-t5-large
  mo.init_from = ""  # a Hugging Face T5 directory to initialise from (no download)
  mo.dtype = "float32"  # compute dtype: float32 on CPU, bfloat16 on accelerators
  mo.param_dtype = "float32"  # master weights dtype
  mo.dropout_rate = 0.1  # dropout in train mode only
  mo.overrides = ml_collections.ConfigDict()  # preset fields to change, e.g. {"d_model": 64}
  # attention kernel: einsum | dot_product_attention (jax.nn.dot_product_attention, JAX/XLA picks
  # the kernel; no attention-probability dropout) | cudnn (force cuDNN flash: GPU, bf16) | auto
  # (dot_product_attention on GPU when attention dropout is off, einsum otherwise). No params.
  mo.attention_impl = "auto"

  # ---------------------------------------------------------------- training (gr_jax/training)
  c.train = t = ml_collections.ConfigDict()
  t.batch_size = 128  # global batch (paper: 128)
  t.num_epochs = 5  # paper: 5
  t.num_steps = 0  # > 0 overrides epochs
  t.learning_rate = 0.002  # paper: 0.002
  t.weight_decay = 0.01  # paper: 0.01 (AdamW)
  t.warmup_fraction = 0.1  # linear warm-up over this share of the run's steps (ours)
  t.schedule = "constant"  # constant | cosine | linear (after warm-up)
  t.grad_clip_norm = 1.0  # global-norm clipping (0 = off)
  t.grad_accum_steps = 1  # micro-batches per optimizer step
  t.log_every_steps = 50  # progress line and metrics.jsonl period
  t.eval_every_steps = 0  # validation loss period (0 = once per epoch)
  # Model selection on validation (the `converged` budget of reproduce.budgets sets these): ""
  # = off, the final step is the result; else a metric of eval.ks (e.g. "recall@30") decoded on
  # the valid split with the run's decoder (mean over the run's tasks). The checkpoint with the
  # best value is kept (checkpoint.best_metric) and `evaluate --step best` uses it.
  t.select_metric = ""
  t.select_every_steps = 0  # validation decode period (0 = once per epoch)
  # > 0: decode this many times per epoch of the run's own training data instead, at steps
  # ceil(k x steps per epoch / N): the first within the first epoch (replaces select_every_steps)
  t.select_evals_per_epoch = 0
  t.patience = 0  # stop after this many validation decodes without improvement (0 = never)
  # A multi-task run also selects per task: the best checkpoint by each task's validation metric
  # is kept too (`evaluate --step best_search | best_rec | best_per_task`), and early stopping
  # waits until NO task has improved for `patience` decodes (the mean's best is still kept)
  t.select_per_task = False
  t.select_max_queries = 0  # decode at most this many valid queries per task (0 = all)
  t.remat = False  # rematerialise layers (large batches or long inputs)
  # loss over the output vocabulary: full ([B, T, V] logits) | chunked (online softmax over
  # vocabulary chunks, no [B, T, V] tensor) | auto (chunked when text + item tokens > 65,536)
  t.loss_impl = "auto"
  t.loss_chunk_size = 16384  # vocabulary entries per chunk of the chunked loss
  t.peak_tflops = 0.0  # device peak for MFU; 0 = look up by device kind, unknown = no MFU
  # PRNG of the dropout masks: threefry2x32 (bits in software: identical on every backend) | rbg
  # (keys derived by threefry, bits from the hardware RngBitGenerator: far cheaper for T5's ~10^9
  # dropout bits per T5-base step on GPU/TPU) | auto (rbg on accelerators, threefry2x32 on CPU)
  t.dropout_prng = "auto"

  # ---------------------------------------------------------------- checkpoints (Orbax)
  c.checkpoint = ck = ml_collections.ConfigDict()
  ck.every_steps = 500  # checkpoint period; the final step is always saved
  ck.keep = 2  # keep the last N
  ck.keep_best = True  # also keep the best by best_metric (validation runs at every save)
  ck.best_metric = "val/loss"  # metric that ranks checkpoints (keep_best, evaluate --step=best)
  ck.best_mode = "min"  # min | max: whether lower or higher best_metric is better
  ck.async_save = False  # Orbax async saves (overlap with training); sync keeps resume simplest

  # ---------------------------------------------------------------- mesh (gr_jax/model/partitioning)
  c.mesh = me = ml_collections.ConfigDict()
  me.data = -1  # data-parallel axis size (-1 = the rest of the devices)
  me.model = 1  # model-parallel axis size
  me.distributed = (
    False  # call jax.distributed.initialize (also when JAX_COORDINATOR_ADDRESS is set)
  )

  # ---------------------------------------------------------------- decoding (gr_jax/decoding)
  c.decode = de = ml_collections.ConfigDict()
  de.method = "beam"  # beam (diverse beam search, paper) | topk_exact (K best items, atomic IDs)
  de.num_beams = 60  # paper follow-up: 60 beams
  de.num_beam_groups = 30  # 30 groups
  de.diversity_penalty = 0.25  # paper: 0.25
  de.length_penalty = 1.0  # Hugging Face default
  de.num_return_sequences = 30  # items returned per query
  de.max_new_tokens = 2  # <item> </s>; semantic IDs decode tokens_per_item + 1 (from the catalogue)
  de.early_stopping = False  # False | True | "never"
  de.batch_size = 64  # queries per decode batch
  de.use_cache = True  # beam: KV-cached decoder steps (True) or recompute the short prefix (False)
  de.one_hot_gather = False  # beam: reorder caches by one-hot einsum (t5x SPMD) vs take_along_axis

  # ---------------------------------------------------------------- evaluation (gr_jax/evaluation)
  c.eval = ev = ml_collections.ConfigDict()
  ev.split = "test"  # test | valid
  ev.ks = (1, 5, 10, 30)  # cut-offs for Recall/NDCG/MRR
  ev.pop_mix_weight = 0.5  # Pop_mix = w * p_search + (1 - w) * p_rec (popularity baselines)
  # Rec rankings of every model and baseline leave out the items of the query's own input history
  # (the usual full-ranking protocol; search is never affected): the K best remaining items are
  # ranked. Recorded as metrics.json info.exclude_seen; runs are paired only under one protocol.
  # Validation inside training (checkpoint selection, early stopping) always ranks every item.
  ev.exclude_seen = False
  # H1/H2 analyses of a study (gr_jax/study/analyses.py -> gr_jax/analysis/popularity.py and
  # cooccurrence.py). analysis_k: top-K depth of H1 (popularity KL, head/torso/tail) and H2; 0 =
  # max(eval.ks)
  ev.analysis_k = 0
  ev.kl_eps = 1e-6  # additive smoothing of both distributions before H1's KL divergence
  ev.bucket_bounds = (1 / 3, 2 / 3)  # head/torso/tail: cumulative share of training examples
  ev.session_window = 10  # H2: a rec target is related to its last N history items

  # ---------------------------------------------------------------- reproduce plan (gr_jax/reproduce.py)
  c.reproduce = r = ml_collections.ConfigDict()
  r.seeds = (0, 1)  # one run per model kind and seed
  r.models = ("search", "rec", "joint")  # Gen_S, Gen_R, Gen_R+S
  r.sweep = ""  # a dotted config field to sweep (e.g. data.sim.shuffle_fraction); "" = none
  r.sweep_values = ()  # its values
  r.sweep_statistic = (
    ""  # manifest field plotted on the x axis (e.g. sim.kl_search_rec); "" = the value
  )
  r.analyses = True  # H1/H2 analyses and t-SNE in the report
  r.test = "ttest"  # ttest | randomization
  r.correction = "holm"  # holm | bonferroni (over every test of the study: the family)
  # Training budgets the study runs (docs/study_design.md "Fair comparison"): epochs =
  # train.num_epochs over each model's own data (the paper); matched_steps = every model of a seed
  # takes the joint model's number of steps; converged = each model trains, decoded on validation
  # converged_evals_per_epoch times per epoch of its OWN data, until its validation Recall@K has
  # not improved for `patience` decodes (Gen_R+S: neither task's), within converged_max_factor x
  # train.num_epochs of its own epochs, and is evaluated at its best-validation checkpoint
  # (Gen_R+S: each task at its own best; the mean-of-tasks checkpoint is reported beside it).
  r.budgets = ("epochs", "converged")
  r.decoders = ("beam", "topk_exact")  # decode.method values evaluated on test (beam = the paper's)
  # Step cap of a converged run: this many times train.num_epochs epochs over the model's own data
  # (x train.num_steps when that is set). A safety net that patience, not the cap, should reach
  # first (a run that hits it is reported as capped): on the quickstart's validation curves
  # (tuning simulator seed 100) patience ended Gen_S, Gen_R and Gen_R+S after 13-16 own epochs,
  # a third of this cap (5 x 8 = 40 own epochs).
  r.converged_max_factor = 5.0
  r.converged_evals_per_epoch = 2  # converged: validation decodes per epoch of the model's own data
  # converged: decodes without improvement before stopping (6 at 2 per epoch = 3 own epochs for
  # every model kind). On those curves (100 valid queries per task) 3 decodes stopped Gen_S after
  # 6 own epochs and Gen_R after 6.5, both still rising (valid Recall@30 0.48 and 0.71 against
  # the 0.56 and 0.79 reached later); 6 to 12 stopped them past their peaks, at the same picks.
  r.patience = 6
  # One simulated dataset per seed (sim.seed + seed), so seeds measure data variance too; real
  # data has one dataset and seeds vary the model only.
  r.dataset_per_seed = True
  # trained/indexed baselines beside Pop_S / Pop_R (gr_jax/baselines/runner.py)
  r.baselines = ("bm25", "biencoder", "sasrec", "bert4rec")
  # Before the first stage, print the study's estimated wall time (gr_jax/study/estimate.py: the
  # train step timed on this machine for the study's model shape, a few seconds, plus fixed
  # allowances); False = skip. Changes no file of the study (nor any stage's fingerprint).
  r.estimate_time = True
  # Per-model tuning on VALIDATION (gr_jax/study/tune.py; docs/study_design.md "Tuning
  # discipline"). `python -m gr_jax.reproduce ... --tune` (or tune.run=True) first trains every
  # model kind of reproduce.models at every point of the grid, with each tuning seed (its own
  # simulated dataset, as a study seed has; real data: the shared dataset, another model seed),
  # evaluates them on the valid split only (never test) and writes <workdir>/tuning/tuning.json:
  # the grid, the rule, every point's validation numbers and each kind's chosen values, with the
  # time it ran. Its stages are resumable and skipped when done; the report prints the whole grid
  # whenever tuning.json exists. Rule (fixed before looking): per model kind, the grid point with
  # the highest mean validation Recall@max(eval.ks) over the tuning seeds of the model's own task
  # (Gen_R+S: the mean of its two tasks); every point within `tolerance` of that best counts as
  # tied, and the first of them in grid order is chosen (list each field's preferred value first).
  # A sweep study tunes on the config without its sweep values; the chosen values apply at every
  # point (a swept field may not be a grid field).
  c.reproduce.tune = tu = ml_collections.ConfigDict()
  tu.run = False  # run the tuning stages before the study (the --tune flag does the same)
  # True: each model kind's study runs take that kind's chosen values from tuning.json (their
  # training stages' fingerprints follow them); False: the study ignores the tuning.
  tu.use = False
  # A tuning.json recorded by an earlier `--tune` run of this same tuning (grid, seeds, budget,
  # decoder, tolerance and models are checked): with use=True and no tuning.json in the workdir,
  # the study takes each kind's chosen values from it, and the report prints its grid and when it
  # ran. `--tune` runs the tuning afresh in the workdir, whose file then wins. "" = none.
  tu.recorded = ""
  # The grid: every combination of the values (product, in this order: the first field varies
  # slowest). grid_fields[i] is a dotted model.* or train.* field (model.overrides.<T5Config
  # field> may be new), grid_values[i] its values, e.g.
  # --config.reproduce.tune.grid_fields="('train.learning_rate',)"
  # --config.reproduce.tune.grid_values="((0.005,0.01),)".
  tu.grid_fields = (
    "train.learning_rate",
    "model.dropout_rate",
    "model.overrides.tie_word_embeddings",
  )
  tu.grid_values = ((0.002, 0.005, 0.01), (0.0, 0.1), (True, False))
  tu.seeds = (100,)  # tuning seeds: never study seeds (reproduce.seeds)
  tu.budget = "epochs"  # the training budget of the tuning runs (one of reproduce.budgets' values)
  tu.decoder = "topk_exact"  # validation decoder (topk_exact: atomic IDs only; else beam)
  tu.tolerance = 0.005  # validation Recall within this of the best counts as a tie (see the rule)

  # ---------------------------------------------------------------- baselines (gr_jax/baselines)
  c.baselines = bl = ml_collections.ConfigDict()
  bl.bm25 = bm = ml_collections.ConfigDict()  # search: BM25 over item texts (bm25s)
  bm.k1 = 1.2  # term-frequency saturation (Robertson's classic value)
  bm.b = 0.75  # document-length normalisation
  bm.method = "lucene"  # bm25s scoring variant: lucene | robertson | atire
  bm.expand_with_train_queries = True  # add an item's *training* search queries to its document
  bm.include_metadata = True  # add the catalogue's text metadata (genres, tags...) to the document
  bm.batch_size = 256  # queries scored per block (memory: block x catalogue floats)
  bl.sasrec = sa = ml_collections.ConfigDict()  # rec: SASRec (Kang & McAuley 2018), causal
  sa.hidden_size = 50  # paper: 50
  sa.num_layers = 2  # self-attention blocks (paper: 2)
  sa.num_heads = 1  # paper: 1
  sa.ffn_size = 50  # point-wise feed-forward width (paper: = hidden size)
  sa.max_len = 50  # most recent items the model sees (paper: 200 on ML-1M, 50 on sparse sets)
  sa.dropout = 0.2  # paper: 0.2 (0.5 on sparse data)
  sa.learning_rate = 1e-3  # paper: 1e-3 (Adam)
  sa.weight_decay = 0.0  # AdamW decoupled decay (paper: none)
  sa.batch_size = 128  # training sequences per step (paper: 128)
  sa.num_epochs = 20  # passes over the training sequences (paper: 200; small for CPU runs)
  sa.num_steps = 0  # > 0 overrides num_epochs
  sa.loss = "ce"  # ce: full softmax over the catalogue | bce: paper's loss, 1 sampled negative
  sa.eval_every_steps = 0  # validation Recall@K period (0 = per epoch, at most 20 in a run)
  sa.checkpoint_every_steps = 200  # Orbax checkpoint period; the final step is always saved
  sa.log_every_steps = 50  # training-loss line period in metrics.jsonl
  sa.eval_batch_size = 256  # queries per scoring block at validation and evaluation
  # Model selection on validation: True = keep the parameters of the decode with the best valid
  # Recall@max(eval.ks) (ties: the earlier), stop after `patience` decodes without improvement
  # (0 = never early) and evaluate those; False = the final step is the result.
  sa.select_best = False
  sa.patience = 0  # validation decodes without improvement before stopping (select_best)
  bl.bert4rec = be = ml_collections.ConfigDict()  # rec: BERT4Rec (Sun et al. 2019), masked items
  be.hidden_size = 64  # paper: 64
  be.num_layers = 2  # transformer layers (paper: 2)
  be.num_heads = 2  # paper: 2
  be.ffn_size = 256  # feed-forward width (paper: 4 x hidden)
  be.max_len = 50  # most recent items, the appended [MASK] included (paper: 200 on ML-1M)
  be.dropout = 0.1  # paper: 0.1
  be.learning_rate = 1e-3  # paper: 1e-4 with warm-up over many epochs; 1e-3 for short runs
  be.weight_decay = 0.01  # AdamW decoupled decay (paper: 0.01)
  be.batch_size = 128  # training sequences per step
  be.num_epochs = 20  # passes over the training sequences (small for CPU runs)
  be.num_steps = 0  # > 0 overrides num_epochs
  be.loss = "ce"  # masked-item softmax over the catalogue (the only loss BERT4Rec defines)
  be.mask_ratio = 0.2  # share of items replaced by [MASK] in training (paper: 0.2 on ML-1M)
  be.eval_every_steps = 0  # validation Recall@K period (0 = per epoch, at most 20 in a run)
  be.checkpoint_every_steps = 200  # Orbax checkpoint period; the final step is always saved
  be.log_every_steps = 50  # training-loss line period in metrics.jsonl
  be.eval_batch_size = 256  # queries per scoring block at validation and evaluation
  # Model selection on validation: True = keep the parameters of the decode with the best valid
  # Recall@max(eval.ks) (ties: the earlier), stop after `patience` decodes without improvement
  # (0 = never early) and evaluate those; False = the final step is the result.
  be.select_best = False
  be.patience = 0  # validation decodes without improvement before stopping (select_best)
  # search and/or rec: dense bi-encoder (gr_jax/baselines/biencoder.py). Defaults follow DPR
  # (Karpukhin et al. 2020) and sentence-transformers' (ST) MultipleNegativesRankingLoss, scaled to
  # a from-scratch tiny T5 where they differ.
  bl.biencoder = bi = ml_collections.ConfigDict()
  bi.tasks = "search"  # search | rec | search,rec (one model on the union of both tasks' examples)
  bi.preset = "tiny"  # T5 preset of the input tower's encoder (trained from scratch)
  bi.overrides = ml_collections.ConfigDict()  # T5Config fields to change, e.g. {"d_model": 64}
  # embedding: a learned item table [num_items, dim] | text: the same encoder over the item's
  # catalogue title + string metadata (datasets without item text refuse it)
  bi.item_tower = "embedding"
  bi.item_text_len = 32  # text tower: tokens of an item's text, EOS included
  bi.projection_dim = 0  # linear map after mean pooling; 0 = none, dim = d_model (DPR default: 0)
  bi.similarity = "cosine"  # cosine (ST's default) | dot (DPR)
  bi.temperature = 0.05  # logits = similarity / this (ST: scale 20 = 1 / 0.05; DPR dot: 1.0)
  # in_batch: softmax over the batch's target items (DPR, ST; in-batch positives of the same input
  # masked) | full: softmax over the whole catalogue (embedding tower only)
  bi.loss = "in_batch"
  bi.dropout = 0.1  # encoder dropout in training (DPR / BERT: 0.1)
  bi.learning_rate = 1e-3  # DPR / ST: 2e-5 to fine-tune BERT; 1e-3 for a from-scratch tiny T5
  bi.weight_decay = 0.01  # AdamW decoupled decay (ST: 0.01; DPR: 0)
  bi.warmup_fraction = 0.1  # linear warm-up share of the steps, then linear decay to 0 (ST, DPR)
  bi.grad_clip_norm = 1.0  # global-norm gradient clipping, 0 = off (ST: 1.0; DPR: 2.0)
  bi.batch_size = 128  # examples per step = in-batch candidates (DPR: 128; ST docs: 16-64)
  bi.num_epochs = 10  # passes over the training examples (DPR: 40 on NQ; small for CPU runs)
  bi.num_steps = 0  # > 0 overrides num_epochs
  bi.eval_every_steps = 0  # validation Recall@K on each task's valid split (0 = per epoch, <= 20)
  bi.checkpoint_every_steps = 200  # Orbax checkpoint period; the final step is always saved
  bi.log_every_steps = 50  # training-loss line period in metrics.jsonl
  bi.eval_batch_size = 256  # queries (and item texts) per scoring block
  return c
