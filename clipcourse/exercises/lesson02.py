"""Checkers for lesson 02 (the data): the held-out combinations, and a caption for a scene."""

from __future__ import annotations

import operator
import re
from collections import Counter

import torch

from .. import data
from ..text import Tokenizer, split_words
from . import Feedback, correct, not_attempted, wrong


def _combo_ids(answer) -> tuple[set[int] | None, str]:
    """The answer as a set of combination ids, or (None, why not)."""
    if isinstance(answer, dict):
        return None, ("a dict: its keys are every combination you counted; the answer is only those whose "
                      "count is zero, as a list")
    if isinstance(answer, tuple) and len(answer) == 1 and getattr(answer[0], "ndim", 0) == 1:
        answer = answer[0]                        # torch.where(mask) / np.nonzero(mask): a tuple of one index array
    if hasattr(answer, "__array__") and not isinstance(answer, torch.Tensor):
        answer = torch.as_tensor(answer)          # a numpy array: as a tensor
    if isinstance(answer, list) and answer and all(isinstance(i, list) and len(i) == 1 for i in answer):
        answer = [i[0] for i in answer]           # mask.nonzero().tolist(): one-item rows, [[1], [5], ...]
    if isinstance(answer, torch.Tensor):
        if answer.dtype == torch.bool:
            return None, ("a mask of True/False values; turn it into the ids where it is True: "
                          "mask.nonzero().flatten().tolist()")
        if answer.is_floating_point():
            if not torch.equal(answer, answer.round()):
                return None, "ids are whole numbers, but your tensor holds fractions"
            answer = answer.long()
        if answer.ndim == 2 and answer.shape[1] == 2:
            return None, ("(colour, shape) pairs, one per row; give one id per combination: "
                          "colour * 6 + shape (data.combo_index)")
        answer = answer.flatten().tolist()
    if isinstance(answer, str) and ("," in answer or " and " in answer):
        return None, "one string holding several names; give a list with one name per combination"
    if isinstance(answer, (str, int)):
        answer = [answer]
    try:
        items = list(answer)
    except TypeError:
        return None, f"expected a list of combination ids or names, got {type(answer).__name__}"
    names = {data.combo_name(i): i for i in range(data.NUM_COMBOS)}
    if len(items) > 1 and all(not isinstance(i, str) and _is_zero(i) for i in items):
        return None, (f"{len(items)} zeros: these look like the counts of the missing combinations "
                      "(per_combo[per_combo == 0]), not their ids; keep where the count is zero: "
                      "(per_combo == 0).nonzero().flatten().tolist()")
    ids = set()
    if len(items) == data.NUM_COMBOS and sorted(i for i in items if isinstance(i, int)) != list(range(data.NUM_COMBOS)):
        return None, (f"{data.NUM_COMBOS} numbers, one per combination: counts or a mask, not ids; keep the "
                      "ids whose count is zero: (counts == 0).nonzero().flatten().tolist()")
    for item in items:
        if isinstance(item, torch.Tensor) and item.ndim == 0 and item.dtype != torch.bool:
            item = item.item()                    # a 0-d tensor from list(tensor): its number
        elif hasattr(item, "__index__") and not isinstance(item, (bool, int)):
            item = operator.index(item)           # numpy's integers
        if isinstance(item, (tuple, list)) and len(item) == 2:
            return None, (f"{item!r} is a pair; give one id per combination (colour * 6 + shape, "
                          "data.combo_index) or a name such as 'green triangle'")
        if isinstance(item, float) and item.is_integer():
            item = int(item)                      # 17.0 is the id 17
        if isinstance(item, str):
            key = " ".join(w for w in split_words(item) if w not in ("a", "an"))
            words = key.split()
            if len(words) == 2 and words[0] in data.SHAPES and words[1] in data.COLOR_NAMES:
                return None, f"{item!r} is not a colour x shape name: the colour comes first ('{words[1]} {words[0]}')"
            if len(words) == 2 and words[1].endswith("s") and f"{words[0]} {words[1][:-1]}" in names:
                return None, f"{item!r} is not a colour x shape name: use the singular ('{words[0]} {words[1][:-1]}')"
            if key not in names:
                return None, (f"{item!r} is not a colour x shape name like 'green triangle' "
                              f"(colours: {', '.join(data.COLOR_NAMES)}; shapes: {', '.join(data.SHAPES)})")
            ids.add(names[key])
        elif isinstance(item, int) and not isinstance(item, bool):
            if not 0 <= item < data.NUM_COMBOS:
                return None, f"{item} is not a combination id (they run from 0 to {data.NUM_COMBOS - 1})"
            ids.add(item)
        else:
            return None, f"expected ids (int) or names (str), got {type(item).__name__} {item!r}"
    return ids, ""


def _is_zero(item) -> bool:
    """Is this item the number 0 (an int, a float, a 0-d tensor or a numpy number)?"""
    try:
        return float(item) == 0
    except (TypeError, ValueError):
        return False


def _names(ids) -> str:
    return ", ".join(data.combo_name(i) for i in sorted(ids))


def check_heldout_combos(answer) -> Feedback:
    """Are these the colour x shape combinations that no training image contains?"""
    if answer is None:
        return not_attempted("the list of combinations that never occur in training (ids or names)")
    ids, why = _combo_ids(answer)
    if ids is None:
        return wrong(why + ".", "Give ids (0..47, colour * 6 + shape) or names such as 'green triangle'.")
    expected = set(data.heldout_combos())
    everything = set(range(data.NUM_COMBOS))
    if ids == expected:
        return correct(f"The {len(expected)} held-out combinations are: {_names(expected)}. Every colour and "
                       f"every shape still appears in training, just never in these pairs.")
    if ids == everything - expected:
        return wrong(f"these {len(ids)} are the combinations that DO appear in training.",
                     "Keep the combinations whose count is zero, not the others.")
    n_colors, n_shapes = len(data.COLOR_NAMES), len(data.SHAPES)
    swapped = {(i % n_shapes) * n_colors + i // n_shapes for i in expected}   # shape * 8 + colour
    if ids == swapped:
        return wrong("your ids use shape * 8 + colour; the package numbers combinations colour * 6 + shape.",
                     "Use data.combo_index(colour, shape), or give names with data.combo_name(i).")
    if ids == {i + 1 for i in expected}:
        return wrong("every id is one too large: ids count from 0.", "Subtract 1, or use data.combo_index(colour, shape).")
    if not ids:
        return wrong("an empty list: no combination at all.",
                     "Count every colour x shape pair over a few thousand training images and keep the zeros.")
    missing, extra = expected - ids, ids - expected
    if not missing and extra:
        return wrong(f"all {len(expected)} held-out combinations are there, but also {len(extra)} that do "
                     f"appear in training: {_names(extra)}.",
                     "A small sample can miss a combination by chance: count over more images "
                     "(a few thousand), or look at both object slots.")
    if missing and not extra:
        return wrong(f"{len(ids)} correct, but {len(missing)} missing.",
                     "Count every colour x shape pair of every present object and keep all the zeros.")
    return wrong(f"{len(ids & expected)} of your {len(ids)} are held out; {len(extra)} of them do appear in "
                 f"training ({_names(extra)}).",
                 "Count how often each colour x shape pair appears in a large training set; keep the zeros.")


def _the_object(scene) -> torch.Tensor:
    """The scene's first object, [colour, shape, size, position, present]; a TypeError / ValueError naming `scene`."""
    if not isinstance(scene, torch.Tensor):
        try:
            scene = torch.as_tensor(scene)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"scene must be a (2, 5) tensor of [colour, shape, size, position, present], "
                            f"got {type(scene).__name__}") from None
    if scene.is_floating_point() or scene.is_complex() or scene.dtype == torch.bool:
        raise TypeError(f"scene must hold integer attributes, got dtype {scene.dtype}")
    if tuple(scene.shape) not in ((2, 5), (5,)):
        raise ValueError(f"scene must have shape (2, 5) (one row per object slot), got {tuple(scene.shape)}")
    obj = (scene[0] if scene.ndim == 2 else scene).long()
    for column, count in enumerate((len(data.COLOR_NAMES), len(data.SHAPES), len(data.SIZES), len(data.POSITIONS))):
        if not 0 <= int(obj[column]) < count:
            raise ValueError(f"scene[0, {column}] = {int(obj[column])} is out of range: column {column} takes "
                             f"0 .. {count - 1} ([colour, shape, size, position, present])")
    return obj


def _tokens(template: str) -> list[str]:
    """'a {size} {color} {shape}' -> ['a', '{size}', '{color}', '{shape}']."""
    return re.findall(r"\{\w+\}|[a-z]+", template)


def _as_template(words: list[str], slots: dict[str, str]) -> list[str]:
    """The caption's words with the scene's words put back as slots, 'an' read as 'a' (checked on its own):
    'a small red circle at the top' -> ['a', '{size}', '{color}', '{shape}', '{where}']."""
    where = split_words(slots["where"])
    out, i = [], 0
    while i < len(words):
        if words[i:i + len(where)] == where:
            out.append("{where}")
            i += len(where)
            continue
        slot = next((f"{{{k}}}" for k in ("color", "shape", "size") if slots[k] == words[i]), None)
        out.append(slot or ("a" if words[i] == "an" else words[i]))
        i += 1
    return out


def _edit_distance(a: list[str], b: list[str]) -> int:
    """How many words to insert, delete or replace to turn a into b (Levenshtein, over words)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def _say(tokens) -> str:
    """['a', '{size}'] -> "'a' and the size"."""
    named = {"{color}": "the colour", "{shape}": "the shape", "{size}": "the size", "{where}": "the position"}
    said = [named.get(t, f"'{t}'") for t in tokens]
    return ", ".join(said[:-1]) + " and " + said[-1] if len(said) > 1 else said[0]


def _template_feedback(words: list[str], slots: dict[str, str]) -> Feedback:
    """Every word is right, but no template writes them so: name the nearest template and what differs."""
    mine = _as_template(words, slots)

    def differences(template: str) -> tuple[list[str], list[str]]:       # (missing, extra) words and slots
        want, have = Counter(_tokens(template)), Counter(mine)
        return list((want - have).elements()), list((have - want).elements())

    def distance(k: int) -> tuple[int, int, int]:        # fewest words to add or drop, then fewest edits, then simplest
        missing, extra = differences(data.SINGLE_TEMPLATES[k])
        return len(missing) + len(extra), _edit_distance(mine, _tokens(data.SINGLE_TEMPLATES[k])), k

    k = min(range(len(data.SINGLE_TEMPLATES)), key=distance)
    template = data.SINGLE_TEMPLATES[k]
    missing, extra = differences(template)
    hint = (f"Fill one template exactly: print(data.SINGLE_TEMPLATES) shows all {len(data.SINGLE_TEMPLATES)}; "
            f"the nearest is data.SINGLE_TEMPLATES[{k}].")
    if mine == _tokens(template):                        # the template's words and order: only 'a' / 'an' differ
        return wrong("ShapesWorld writes 'an' before a vowel and 'a' before a consonant ('an orange ring', "
                     "'a red ring').", "data.fix_articles makes that change for you.")
    if not missing and not extra:
        return wrong(f"the right words, but in an order no ShapesWorld template writes; the nearest template is "
                     f"'{template}'.", hint)
    if not extra:
        return wrong(f"{_say(missing)} {'are' if len(missing) > 1 else 'is'} missing: the nearest ShapesWorld "
                     f"template, '{template}', has {'them' if len(missing) > 1 else 'it'}.", hint)
    if not missing:
        return wrong(f"no ShapesWorld template writes {_say(extra)} there; the nearest is '{template}'.", hint)
    return wrong(f"{_say(extra)} where the nearest ShapesWorld template, '{template}', has {_say(missing)}.", hint)


_POSITION_WORDS = {"left": "left", "right": "right", "top": "top", "bottom": "bottom", "centre": "centre"}


def check_caption(answer, scene) -> Feedback:
    """Does the caption describe this one-object scene, written as one of ShapesWorld's templates writes it?"""
    obj = _the_object(scene)
    if answer is None:
        return not_attempted("a caption for the scene, such as 'a ... ...'")
    if isinstance(answer, (list, tuple)) and all(isinstance(w, str) for w in answer):
        return wrong(f"a {type(answer).__name__} of words; expected one string.",
                     "Join the words: ' '.join(words), or write the caption in quotes.")
    if isinstance(answer, torch.Tensor):
        return wrong("a tensor (token ids?); expected the caption as text.",
                     "Write the caption in quotes, e.g. 'a red circle'.")
    if not isinstance(answer, str):
        return wrong(f"expected a string, got {type(answer).__name__}.", "Write the caption in quotes.")
    if not answer.strip():
        return wrong("an empty caption.", "Name at least the colour and the shape, e.g. 'a red circle'.")
    full_stop = answer.strip().endswith((".", "!"))
    answer = answer.strip().rstrip(".! ")          # a sentence's full stop is fine; ShapesWorld writes none
    answer = " ".join(answer.replace(",", " ").split())   # so is a comma ("a small, purple triangle")
    if any(ch.isdigit() for ch in answer):
        return wrong("the caption contains digits: those are the scene's indices, not words.",
                     "Look each index up: data.COLOR_NAMES[colour], data.SHAPES[shape], data.SIZES[size].")
    c, s, z, p = (int(v) for v in obj[:4])
    tok = Tokenizer.for_shapesworld()
    try:
        tok.encode(answer)
    except ValueError as err:
        return wrong(f"the tokenizer cannot read it: {err}",
                     "Use only ShapesWorld words: data.COLOR_NAMES, data.SHAPES, data.SIZES, data.WHERE.")
    words = split_words(answer)
    if any((a == "and" and b in ("a", "an")) or (a in ("left", "right") and b == "of") for a, b in zip(words, words[1:])):
        return wrong("the caption describes two objects ('and', 'left of', 'right of'), but this scene has one.",
                     "Describe the one object: its colour and shape, and if you like its size and position.")
    want = {"colour": data.COLOR_NAMES[c], "shape": data.SHAPES[s]}
    columns = {"colour": data.COLOR, "shape": data.SHAPE}
    tables = {"colour": data.COLOR_NAMES, "shape": data.SHAPES}
    for kind in ("colour", "shape"):
        found = [w for w in words if w in tables[kind]]
        if not found:
            return wrong(f"the caption names no {kind}.",
                         f"Column {columns[kind]} of the scene is the {kind} index: {obj[columns[kind]].item()}.")
        if len(found) > 1:
            named = f"several {kind}s" if len(set(found)) > 1 else f"a {kind} twice"
            return wrong(f"the caption names {named} ({', '.join(found)}), but the scene has one object.",
                         f"Name one {kind}, once.")
        if found[0] != want[kind]:
            idx = obj[columns[kind]].item()
            other = [k for k in ("colour", "shape") if k != kind][0]
            other_idx = obj[columns[other]].item()
            mixed = other_idx < len(tables[kind]) and tables[kind][other_idx] == found[0]
            msg = (f"the {kind} is wrong: you wrote '{found[0]}', but the {kind} index {idx} is "
                   f"'{want[kind]}'.")
            if mixed:
                msg += f" You looked '{found[0]}' up with the {other} index ({other_idx})."
            return wrong(msg, f"Look the index up in data.{'COLOR_NAMES' if kind == 'colour' else 'SHAPES'}; "
                              f"the scene's columns are [colour, shape, size, position, present].")
    if words.index(want["colour"]) > words.index(want["shape"]):
        return wrong("ShapesWorld captions put the colour before the shape ('a red circle').",
                     "Swap the two words.")
    sizes = [w for w in words if w in data.SIZES]
    if sizes and sizes != [data.SIZES[z]]:
        return wrong(f"the size is wrong: the size index {z} is '{data.SIZES[z]}', you wrote "
                     f"'{', '.join(sizes)}'.", "Look it up in data.SIZES.")
    if sizes and words.index(sizes[0]) > words.index(want["colour"]):
        return wrong("ShapesWorld captions put the size before the colour ('a small red circle').",
                     "Move the size word in front of the colour.")
    places = [w for w in words if w in _POSITION_WORDS]
    where = data.POSITIONS[p]
    if places and places != [where]:
        return wrong(f"the position is wrong: position index {p} is '{data.WHERE[where]}', you wrote "
                     f"'{' '.join(places)}'.", "Look it up in data.POSITIONS, then data.WHERE.")
    phrase = split_words(data.WHERE[where])               # ['at', 'the', 'top']
    if places and words[-len(phrase):] != phrase:
        end = words.index(where) + 1
        start = end - 1
        while start > 0 and words[start - 1] in ("at", "on", "in", "the"):
            start -= 1                                    # what the learner wrote for the phrase: 'top', 'on the top'
        if words[start:end] != phrase:
            return wrong(f"ShapesWorld writes the position as data.WHERE says it, '{data.WHERE[where]}', not "
                         f"'{' '.join(words[start:end])}'.", f"Copy the phrase: data.WHERE[data.POSITIONS[{p}]].")
        return wrong(f"ShapesWorld captions end with the position: '... {data.WHERE[where]}'.",
                     f"Move '{data.WHERE[where]}' to the end, after the shape.")
    one = torch.zeros(1, 2, 5, dtype=torch.long)          # this object alone, as the data writes it
    one[0, 0, :4], one[0, 0, data.PRESENT] = obj[:4], 1
    if " ".join(words) not in data.true_captions(one)[0]:    # the caption of every one-object template
        slots = {"color": want["colour"], "shape": want["shape"], "size": data.SIZES[z], "where": data.WHERE[where]}
        return _template_feedback(words, slots)
    extras = []
    if not sizes:
        extras.append(f"the size ('{data.SIZES[z]}')")
    if not places:
        extras.append(f"the position ('{data.WHERE[where]}')")
    note = f" You could also give {' and '.join(extras)}." if extras else ""
    if full_stop:
        note += " (ShapesWorld captions end without a full stop; the check ignored yours.)"
    return correct(f"'{answer}' matches the scene: a {data.SIZES[z]} {want['colour']} {want['shape']} "
                   f"{data.WHERE[where]}.{note}")
