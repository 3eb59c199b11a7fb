"""Checker for lesson 03 (encoders): where is the <eot> token of each caption?"""

from __future__ import annotations

import torch

from ..text import Tokenizer
from . import Feedback, correct, not_attempted, wrong


def check_eot_positions(answer, tokens: torch.Tensor, eot_id: int = Tokenizer.eot_id,
                        pad_id: int = Tokenizer.pad_id) -> Feedback:
    """Is `answer` the (B,) index of the <eot> token in each row of `tokens` (B, L)?"""
    if answer is None:
        return not_attempted("a (B,) tensor with the position of <eot> in each row of tokens")
    if (isinstance(answer, tuple) and len(answer) == 2 and all(isinstance(a, torch.Tensor) for a in answer)
            and answer[0].shape == answer[1].shape == (len(tokens),)):
        return wrong("that is a pair of tensors, (rows, positions), as torch.where or nonzero(as_tuple=True) "
                     "give it.", "Keep the second: torch.where(tokens == eot_id)[1] (each row has one <eot>).")
    by_list = isinstance(answer, (list, tuple))                  # counted by eye, or by a Python loop
    if by_list or type(answer).__module__ == "numpy":
        try:
            answer = torch.as_tensor(answer)
        except (TypeError, ValueError, RuntimeError):
            return wrong(f"expected a tensor of positions, got a {type(answer).__name__} that is not one "
                         "list of numbers.", "One position per caption: a (B,) tensor.")
    if not isinstance(answer, torch.Tensor):
        return wrong(f"expected a tensor of positions, got {type(answer).__name__}.",
                     "Compute it with tensor operations on tokens.")
    b, length = tokens.shape
    if answer.shape == tokens.shape and answer.dtype == torch.bool:
        return wrong("that is a (B, L) mask of where <eot> is, not its position.",
                     "Turn the mask into an index per row: .int().argmax(dim=1).")
    if answer.shape in ((b, 1), (1, b)):
        return wrong(f"shape {tuple(answer.shape)}: the right count, but an extra dimension (keepdim=True?).",
                     "Drop it: .squeeze(), or argmax(dim=1) without keepdim.")
    if answer.dtype == torch.bool:
        return wrong("booleans, not positions.", "Positions are indices: (tokens == eot_id).int().argmax(dim=1).")
    if answer.shape == (b, 2) and torch.equal(answer[:, 0].cpu().long(), torch.arange(b)):
        return wrong(f"shape {tuple(answer.shape)}: the (row, position) pairs that nonzero() gives.",
                     "Keep the positions, column 1: (tokens == eot_id).nonzero()[:, 1], or "
                     "(tokens == eot_id).int().argmax(dim=1).")
    if answer.ndim == 1 and len(answer) == length != b:
        return wrong(f"wrong shape ({length},): one number per token position, not per caption: that reduced over "
                     "the batch (dim=0).", "Reduce over the token dimension instead: dim=1.")
    if answer.ndim == 1 and len(answer) != b:
        return wrong(f"wrong shape ({len(answer)},): {len(answer)} positions, but tokens has {b} captions. Computed "
                     "from another batch of tokens?", f"Use the ({b}, {length}) tokens this check is given (the "
                     "exercise's own), one position per row.")
    if answer.shape != (b,):
        return wrong(f"wrong shape {tuple(answer.shape)}; expected ({b},), one position per caption.",
                     "Reduce over the token dimension (dim=1).")
    if answer.is_floating_point():
        if not torch.equal(answer, answer.round()):
            return wrong("positions must be whole numbers.", "Use argmax, not mean.")
        answer = answer.long()
    answer = answer.cpu().long()
    eot = (tokens == eot_id).int().argmax(dim=1)                 # (B,)
    if (answer < 0).any():
        return wrong(f"negative positions ({answer.min().item()}): counted from the end, or a 'not found' -1.",
                     f"Positions count from 0 at <sot>; tokens has {length} positions per row.")
    if (answer >= length).any():
        return wrong(f"position {answer.max().item()} does not exist: each row has {length} tokens (0..{length - 1}).",
                     "Look for the <eot> id in each row: (tokens == eot_id).int().argmax(dim=1).")
    if torch.equal(answer, eot):
        if by_list:
            return correct("Right positions. A list, though: the text encoder finds them for a whole batch at "
                           "once with tensor operations. Can you? (tokens == eot_id) is where to start.")
        return correct("The text encoder reads its summary of each caption at these positions.")
    if torch.equal(answer, tokens.argmax(dim=1)) and int(tokens.max()) != eot_id:
        return wrong("tokens.argmax(dim=1) finds the token with the largest id, not <eot>.",
                     f"That trick works in CLIP only because its <eot> has the largest id (49407); here "
                     f"<eot> is {eot_id}. Compare with the id: (tokens == eot_id).int().argmax(dim=1).")
    first_pad = (tokens == pad_id).int().argmax(dim=1)
    if torch.equal(answer, first_pad):
        return wrong("one place after <eot>: the position of the first <pad> token, which is also each caption's "
                     "length in tokens (<sot> and <eot> included). Positions count from 0, so <eot> sits at "
                     "length - 1.", "Look for the <eot> id itself: (tokens == eot_id).int().argmax(dim=1).")
    if torch.equal(answer, eot - 1):
        return wrong("off by one: these are the last words, one place before <eot>.",
                     "Counting words forgets that <sot> sits at position 0; find the <eot> id directly.")
    if torch.equal(answer, eot + 1):
        return wrong("off by one: one place after <eot>.", "Positions count from 0.")
    if torch.equal(answer, (tokens != pad_id).sum(dim=1)):
        return wrong("that is the number of non-pad tokens, one more than the <eot> position.",
                     "Positions count from 0: subtract one, or find the <eot> id directly.")
    if torch.equal(answer, torch.full_like(answer, length - 1)):
        return wrong("that is the last position of every row, which is padding.",
                     "Captions have different lengths; find where each one's <eot> is.")
    if (answer == 0).all():
        return wrong("every position is 0, the <sot> token: argmax over a row with no match returns 0.",
                     f"Is the id right? <eot> is {eot_id}; compare tokens with it, then .int().argmax(dim=1).")
    if (answer == answer[0]).all() and not (eot == eot[0]).all():
        return wrong(f"the same position ({answer[0].item()}) for every caption, but the captions have different "
                     "lengths.", "Compute one position per row from that row's tokens.")
    right = (answer == eot).sum().item()
    return wrong(f"{right} of {b} positions are right.",
                 "For each row, the index where tokens == eot_id: (tokens == eot_id).int().argmax(dim=1).")
