"""Text tokenizer: a T5 SentencePiece model, loaded from a Hugging Face directory or trained here.

T5 conventions: pad 0, EOS 1, UNK 2, no BOS. A Hugging Face T5 directory holds `spiece.model`; its
`config.json` may declare a larger `vocab_size` than the SentencePiece model (flan-t5: 32128 vs
32100, padded for the embedding table), and item tokens must start after the *model's* vocabulary,
so `text_vocab_size` takes the larger of the two.

Training (no pretrained model): a unigram model on the dataset's query text, offline and
deterministic (one thread, no input shuffling, no sampling). `hard_vocab_limit=False` lets small
corpora produce a smaller vocabulary than asked instead of failing.
"""

from __future__ import annotations

import io
import json
import os
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from gr_jax.data.errors import DataError

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2


class TextTokenizer:
  """SentencePiece wrapper with T5 special ids; `encode` adds no EOS (callers append it)."""

  def __init__(
    self, model_proto: bytes, *, text_vocab_size: int | None = None, source: str = "<spiece>"
  ):
    self.model_proto = bytes(model_proto)
    self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
    checks = (
      (PAD_ID, "pad", self.sp.pad_id()),
      (EOS_ID, "eos", self.sp.eos_id()),
      (UNK_ID, "unk", self.sp.unk_id()),
    )
    for want, name, got in checks:
      if got != want:
        raise DataError(source, 0, f"{name}_id", f"T5 tokenizers need {name} id {want}, got {got}")
    self.text_vocab_size = max(int(text_vocab_size or 0), self.sp.get_piece_size())

  @property
  def piece_size(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, text: str | Sequence[str]):
    """Token ids of one string (list[int]) or of a list of strings (list of lists); no EOS."""
    return self.sp.encode(text if isinstance(text, str) else list(text))

  def decode(self, ids: Iterable[int]) -> str:
    ids = [int(i) for i in ids if 0 <= int(i) < self.piece_size and int(i) not in (PAD_ID, EOS_ID)]
    return self.sp.decode(ids)

  def encode_padded(
    self,
    texts: Sequence[str],
    length: int,
    max_tokens: int | None = None,
    truncated: dict[str, int] | None = None,
  ) -> np.ndarray:
    """int32 `[len(texts), length]`: tokens (at most max_tokens incl. EOS), EOS, then 0 padding.
    `truncated`, when given, gets the number of texts cut to fit added under "texts"."""
    max_tokens = min(length, max_tokens or length)
    out = np.zeros((len(texts), length), np.int32)
    cut = 0
    for row, ids in enumerate(self.sp.encode(list(texts))):
      cut += len(ids) > max_tokens - 1
      ids = ids[: max_tokens - 1] + [EOS_ID]
      out[row, : len(ids)] = ids
    if truncated is not None:
      truncated["texts"] = truncated.get("texts", 0) + cut
    return out

  def save(self, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "spiece.model"), "wb") as f:
      f.write(self.model_proto)
    # The model's text vocabulary (may exceed the SentencePiece size, see module doc).
    with open(os.path.join(directory, "tokenizer_info.json"), "w") as f:
      json.dump({"text_vocab_size": self.text_vocab_size, "piece_size": self.piece_size}, f)

  @classmethod
  def load(cls, path: str) -> "TextTokenizer":
    """From a directory (HF T5 dir or one written by `save`) or a `.model` file."""
    model_file, vocab = path, None
    if os.path.isdir(path):
      model_file = os.path.join(path, "spiece.model")
      for name, key in (("tokenizer_info.json", "text_vocab_size"), ("config.json", "vocab_size")):
        meta = os.path.join(path, name)
        if os.path.exists(meta):
          with open(meta) as f:
            vocab = json.load(f).get(key)
          break
    if not os.path.exists(model_file):
      raise DataError(
        model_file,
        0,
        "spiece.model",
        "no SentencePiece model here; expected a Hugging Face T5 directory",
      )
    with open(model_file, "rb") as f:
      return cls(f.read(), text_vocab_size=vocab, source=model_file)


def train_tokenizer(sentences: Iterable[str], vocab_size: int) -> TextTokenizer:
  """Trains a unigram SentencePiece model with T5 special ids, deterministically."""
  sentences = [s for s in sentences if s and s.strip()]
  if not sentences:
    raise DataError("<query text>", 0, "query", "no non-empty text to train a tokenizer on")
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(sentences),
    model_writer=model,
    model_type="unigram",
    vocab_size=int(vocab_size),
    pad_id=PAD_ID,
    eos_id=EOS_ID,
    unk_id=UNK_ID,
    bos_id=-1,
    hard_vocab_limit=False,
    num_threads=1,
    shuffle_input_sentence=False,
    input_sentence_size=0,
    character_coverage=1.0,
    minloglevel=2,
  )
  return TextTokenizer(model.getvalue())
