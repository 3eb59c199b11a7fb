"""A word-level tokenizer for captions (lesson 02).

CLIP uses byte-pair encoding over 49,152 sub-word pieces, because its captions come from the whole
web and any word must be representable. ShapesWorld has a closed vocabulary of a few dozen words, so
one token per word is enough and keeps every token readable.

Unknown words raise a ValueError that names them, by default: a silent `<unk>` would hide a typo in a
prompt ("a red cirle") behind a plausible-looking score. Pass `unknown="unk"` to map them to `<unk>`
instead, as you would for your own captions (see `Tokenizer.from_captions`).

Token ids: 0 is `<pad>`, 1 is `<sot>` (start of text), 2 is `<eot>` (end of text), 3 is `<unk>`.
The text encoder reads its sentence summary at the `<eot>` position, as CLIP does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch

from . import data

PAD, SOT, EOT, UNK = "<pad>", "<sot>", "<eot>", "<unk>"
SPECIALS = (PAD, SOT, EOT, UNK)

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-case words and punctuation marks of a caption."""
    return _WORD.findall(text.lower())


class Tokenizer:
    """Maps captions to fixed-length id tensors: <sot> words... <eot> <pad>... ."""

    def __init__(self, words: Iterable[str], *, context_length: int = 16, unknown: str = "error"):
        if unknown not in ("error", "unk"):
            raise ValueError(f"unknown must be 'error' or 'unk', got {unknown!r}")
        if context_length < 3:
            raise ValueError(f"context_length must be at least 3 (<sot>, a word, <eot>), got {context_length}")
        vocab = list(SPECIALS) + sorted(set(words) - set(SPECIALS))
        self.vocab: list[str] = vocab
        self.index: dict[str, int] = {w: i for i, w in enumerate(vocab)}
        self.context_length = context_length
        self.unknown = unknown

    pad_id, sot_id, eot_id, unk_id = 0, 1, 2, 3

    @classmethod
    def from_captions(cls, captions: Iterable[str], **kwargs) -> "Tokenizer":
        """A tokenizer whose vocabulary is every word in the given captions."""
        return cls({w for c in captions for w in split_words(c)}, **kwargs)

    @classmethod
    def for_shapesworld(cls, **kwargs) -> "Tokenizer":
        """The tokenizer for every caption ShapesWorld can write."""
        words = set(data.COLOR_NAMES) | set(data.SHAPES) | set(data.SIZES) | {"an"}
        words |= {w for phrase in data.WHERE.values() for w in split_words(phrase)}
        for t in data.SINGLE_TEMPLATES + data.PAIR_TEMPLATES:
            words |= {w for w in split_words(re.sub(r"\{\w+\}", " ", t))}
        return cls(words, **kwargs)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Ids of one caption, with <sot> and <eot>, unpadded."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        words = split_words(text)
        unknown = [w for w in words if w not in self.index]
        if unknown and self.unknown == "error":
            raise ValueError(f"unknown word(s) {unknown} in caption {text!r}; "
                             f"the vocabulary has {len(self.vocab)} entries (use unknown='unk' to allow)")
        ids = [self.index.get(w, self.unk_id) for w in words]
        if len(ids) + 2 > self.context_length:
            raise ValueError(f"caption {text!r} has {len(ids)} words, more than context_length - 2 = "
                             f"{self.context_length - 2}")
        return [self.sot_id] + ids + [self.eot_id]

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Encode a caption or a list of captions to a long tensor (B, context_length)."""
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.long)  # (B, L)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            out[row, :len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Words of one id sequence, without special tokens."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return " ".join(self.vocab[i] for i in ids if i >= len(SPECIALS) or i == self.unk_id)
