"""ShapesWorld: procedural images of coloured shapes with captions (lesson 02).

Everything here is seeded and vectorised: a scene is a small integer tensor of attributes, and
`render` turns a whole batch of scenes into pixels at once with tensor maths (no Python loop per
image), so tens of thousands of 32x32 images take well under a second on one core.

A scene holds up to two objects. Each object has a colour, a shape, a size and a position. With two
objects, the first sits in the left half and the second in the right half, so captions can say
"a red circle left of a blue square" (the binding lesson builds on that).

The zero-shot split holds out whole colour x shape combinations: no training image contains a
"green square", yet every colour and every shape is seen in training. A model that scores well on
held-out combinations has learned to compose "green" and "square", not memorised pairs.
"""

from __future__ import annotations

import codecs
import csv
import math
import operator
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

import torch

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "cyan": (40, 220, 230),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "diamond", "cross", "ring")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
WHERE: dict[str, str] = {"left": "on the left", "right": "on the right", "top": "at the top",
                         "bottom": "at the bottom", "centre": "in the centre"}

COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
NUM_COMBOS = len(COLORS) * len(SHAPES)  # 48 colour x shape classes

# Attribute columns of a scene tensor (N, 2, 5): one row per object slot.
COLOR, SHAPE, SIZE, POS, PRESENT = range(5)

SINGLE_TEMPLATES: tuple[str, ...] = (
    "a {color} {shape}",
    "a {size} {color} {shape}",
    "a picture of a {color} {shape}",
    "a {color} {shape} {where}",
    "there is a {size} {color} {shape}",
    "a {size} {color} {shape} {where}",
)
PAIR_TEMPLATES: tuple[str, ...] = (
    "a {color} {shape} and a {color2} {shape2}",
    "a {color} {shape} left of a {color2} {shape2}",
    "a {color2} {shape2} right of a {color} {shape}",
    "a {size} {color} {shape} and a {size2} {color2} {shape2}",
)
PROMPT_TEMPLATE = "a {color} {shape}"  # the zero-shot class prompt (lesson 08)

_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def fix_articles(text: str) -> str:
    """'a orange circle' -> 'an orange circle', so templates can always write 'a {}'."""
    return _ARTICLE.sub(lambda m: m.group(1) + "n ", text)


def combo_index(color: int | torch.Tensor, shape: int | torch.Tensor):
    """The class id of a colour x shape combination (0 .. 47)."""
    return color * len(SHAPES) + shape


def combo_name(index: int) -> str:
    """'red circle' for a combination id."""
    try:
        index = operator.index(index)                   # an int, numpy int or 0-d integer tensor; 2.0 is not an id
    except TypeError:
        raise TypeError(f"index must be a whole-number combination id, got {index!r}") from None
    if not 0 <= index < NUM_COMBOS:                     # -1 would silently name the last one
        raise ValueError(f"index must be a combination id in 0 .. {NUM_COMBOS - 1}, got {index!r}")
    return f"{COLOR_NAMES[index // len(SHAPES)]} {SHAPES[index % len(SHAPES)]}"


def class_prompts(template: str = PROMPT_TEMPLATE) -> list[str]:
    """One caption per colour x shape class, in class-id order (lesson 08)."""
    return [fix_articles(template.format(color=COLOR_NAMES[i // len(SHAPES)], shape=SHAPES[i % len(SHAPES)]))
            for i in range(NUM_COMBOS)]


def heldout_combos() -> list[int]:
    """The colour x shape ids held out of training: one shape per colour, each shape held out at
    least once, so every colour and every shape is still seen in training (a Latin-square pick)."""
    # colour c loses shape (c * 5 + 1) mod 6: 8 combinations, every shape at least once.
    return sorted(combo_index(c, (c * 5 + 1) % len(SHAPES)) for c in range(len(COLORS)))


def _allowed_combos(split: str) -> torch.Tensor:
    held = set(heldout_combos())
    if split == "train":
        ids = [i for i in range(NUM_COMBOS) if i not in held]
    elif split == "heldout":
        ids = sorted(held)
    elif split == "all":
        ids = list(range(NUM_COMBOS))
    else:
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    return torch.tensor(ids)


def sample_scenes(n: int, *, split: str = "train", two_object_prob: float = 0.3,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw n random scenes as an int tensor (n, 2, 5) of [colour, shape, size, pos, present]."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not 0.0 <= two_object_prob <= 1.0:
        raise ValueError(f"two_object_prob must be in [0, 1], got {two_object_prob}")
    g = generator
    combos = _allowed_combos(split)
    pick = combos[torch.randint(len(combos), (n, 2), generator=g)]  # (n, 2) class ids
    scenes = torch.zeros(n, 2, 5, dtype=torch.long)
    scenes[..., COLOR] = pick // len(SHAPES)
    scenes[..., SHAPE] = pick % len(SHAPES)
    scenes[..., SIZE] = torch.randint(len(SIZES), (n, 2), generator=g)
    two = torch.rand(n, generator=g) < two_object_prob  # (n,)
    scenes[:, 0, PRESENT] = 1
    scenes[:, 1, PRESENT] = two.long()
    # One object: anywhere. Two objects: slot 0 on the left, slot 1 on the right.
    scenes[:, 0, POS] = torch.where(two, 0, torch.randint(len(POSITIONS), (n,), generator=g))
    scenes[:, 1, POS] = torch.where(two, 1, 0)
    return scenes


def _square(u, v): return (u.abs() <= 0.85) & (v.abs() <= 0.85)
def _circle(u, v): return u * u + v * v <= 1.0
def _triangle(u, v): return (v.abs() <= 0.9) & (u.abs() <= (v + 0.9) * 0.55)    # apex up
def _diamond(u, v): return u.abs() + v.abs() <= 1.0
def _cross(u, v):
    au, av = u.abs(), v.abs()
    return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.36)


# Each shape as a test on unit coordinates u, v (the object's centre at 0, its radius at 1).
_SHAPE_MASKS = (_square, _circle, _triangle, _diamond, _cross, _ring)  # in the order of SHAPES


def render(scenes: torch.Tensor, resolution: int = 32, *, jitter: float = 0.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Render scenes (N, 2, 5) to uint8 images (N, 3, resolution, resolution), all at once."""
    _check_scenes(scenes)
    if resolution < 16:
        raise ValueError(f"resolution must be at least 16 pixels, got {resolution}")
    if not 0 <= jitter < math.inf:                      # NaN or < 0 was ignored, inf made black objects
        raise ValueError(f"jitter must be a finite number >= 0 (colour noise, a fraction of 255), got {jitter!r}")
    n, g, res = scenes.shape[0], generator, resolution
    radius = torch.tensor([0.15, 0.27])[scenes[..., SIZE]] * res               # (N, 2) in pixels
    # Centre of each object: a named region plus a little random offset.
    anchors = torch.tensor([[0.27, 0.5], [0.73, 0.5], [0.5, 0.27], [0.5, 0.73], [0.5, 0.5]])
    centre = anchors[scenes[..., POS]] * res                                    # (N, 2, 2) as (x, y)
    wiggle = (torch.rand(n, 2, 2, generator=g) - 0.5) * (0.12 * res)
    centre = (centre + wiggle).clamp(radius[..., None], res - radius[..., None])
    palette = torch.tensor(list(COLORS.values()), dtype=torch.float32)         # (C, 3)
    rgb = palette[scenes[..., COLOR]]                                          # (N, 2, 3)
    if jitter > 0:
        rgb = rgb + torch.randn(n, 2, 3, generator=g) * (255 * jitter)
    rgb = rgb.round().clamp(0, 255).to(torch.uint8)
    img = torch.empty(n, 3, res, res, dtype=torch.uint8)
    for lo in range(0, n, _CHUNK):  # in chunks: the per-pixel tensors of all N at once are large
        sl = slice(lo, lo + _CHUNK)
        img[sl] = _paint(scenes[sl], centre[sl], radius[sl], rgb[sl], res)
    return img


_CHUNK = 2048  # scenes painted at once: ~40 MB of per-pixel temporaries at 32x32


def _paint(scenes, centre, radius, rgb, res) -> torch.Tensor:
    """Paint the objects of scenes (n, 2, 5) with their centres, radii and colours: (n, 3, res, res)."""
    coords = torch.arange(res, dtype=torch.float32) + 0.5
    x = coords.view(1, 1, 1, res)
    y = coords.view(1, 1, res, 1)
    u = (x - centre[..., 0, None, None]) / radius[..., None, None]              # (n, 2, H, W)
    v = (y - centre[..., 1, None, None]) / radius[..., None, None]              # (n, 2, H, W)
    present = scenes[..., PRESENT].bool()                                      # (n, 2)
    mask = torch.zeros(len(scenes), 2, res, res, dtype=torch.bool)             # (n, 2, H, W)
    for s, shape_mask in enumerate(_SHAPE_MASKS):  # each object is drawn only as its own shape
        sel = present & (scenes[..., SHAPE] == s)                              # (n, 2)
        if sel.any():
            mask[sel] = shape_mask(u[sel], v[sel])
    img = torch.full((len(scenes), 3, res, res), 20, dtype=torch.uint8)        # dark background
    for slot in range(2):  # slot 1 is painted over slot 0 where they touch
        m = mask[:, slot, None]                                                # (n, 1, H, W)
        img = torch.where(m, rgb[:, slot, :, None, None], img)
    return img


def describe(scenes: torch.Tensor, *, generator: torch.Generator | None = None,
             template: int | None = None) -> list[str]:
    """One caption per scene, from a template drawn at random (or the given template index).

    Only the draw uses a random number generator (`generator`, else torch's global one): with a template,
    nothing is drawn and no generator moves.
    """
    _check_scenes(scenes)
    out = []
    picks = (torch.randint(1 << 30, (len(scenes),), generator=generator).tolist() if template is None
             else [template] * len(scenes))
    for scene, pick in zip(scenes.tolist(), picks):
        (c, s, z, p, _), (c2, s2, z2, _, present2) = scene
        words = dict(color=COLOR_NAMES[c], shape=SHAPES[s], size=SIZES[z], where=WHERE[POSITIONS[p]],
                     color2=COLOR_NAMES[c2], shape2=SHAPES[s2], size2=SIZES[z2])
        templates = PAIR_TEMPLATES if present2 else SINGLE_TEMPLATES
        t = templates[pick % len(templates)]
        out.append(fix_articles(t.format(**words)))
    return out


def hard_negative(scenes: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """The same scenes with one attribute of the first object (colour or shape) replaced by another value."""
    _check_scenes(scenes)
    g = generator
    neg = scenes.clone()
    n = len(scenes)
    which = torch.randint(2, (n,), generator=g)                                   # 0: colour, 1: shape
    new_color = (scenes[:, 0, COLOR] + torch.randint(1, len(COLORS), (n,), generator=g)) % len(COLORS)
    new_shape = (scenes[:, 0, SHAPE] + torch.randint(1, len(SHAPES), (n,), generator=g)) % len(SHAPES)
    neg[:, 0, COLOR] = torch.where(which == 0, new_color, scenes[:, 0, COLOR])
    neg[:, 0, SHAPE] = torch.where(which == 1, new_shape, scenes[:, 0, SHAPE])
    return neg


def hard_negative_captions(scenes: torch.Tensor, *, generator: torch.Generator | None = None,
                           template: int = 0) -> list[str]:
    """Captions that are wrong in exactly one attribute: 'a red circle' -> 'a blue circle'."""
    return describe(hard_negative(scenes, generator=generator), generator=generator, template=template)


SWAPPABLE: tuple[str, ...] = ("color", "shape")   # the attributes swap_attribute can exchange


_ATTRIBUTE_COUNTS = (len(COLORS), len(SHAPES), len(SIZES), len(POSITIONS), 2)   # values per column of a scene


def _check_scenes(scenes) -> None:
    """Raise a TypeError / ValueError naming `scenes` unless it is an integer (N, 2, 5) tensor of valid attributes."""
    if not isinstance(scenes, torch.Tensor):
        raise TypeError(f"scenes must be a torch.Tensor (N, 2, 5), got {type(scenes).__name__}")
    if scenes.ndim != 3 or scenes.shape[1:] != (2, 5):
        raise ValueError(f"scenes must have shape (N, 2, 5), got {tuple(scenes.shape)}")
    if scenes.is_floating_point() or scenes.is_complex() or scenes.dtype == torch.bool:
        raise TypeError(f"scenes must hold integer attributes (as sample_scenes makes), got dtype {scenes.dtype}")
    bad = (scenes < 0) | (scenes >= torch.tensor(_ATTRIBUTE_COUNTS, device=scenes.device))   # (N, 2, 5)
    if bool(bad.any()):
        i, slot, col = bad.nonzero()[0].tolist()
        raise ValueError(f"scenes[{i}, {slot}, {col}] = {int(scenes[i, slot, col])} is out of range: column {col} "
                         f"takes 0 .. {_ATTRIBUTE_COUNTS[col] - 1} ([colour, shape, size, pos, present])")


def swap_attribute(scenes: torch.Tensor, attribute: str = "color") -> torch.Tensor:
    """Two-object scenes with one attribute exchanged between the objects (the binding test, lesson 11).

    'a red circle left of a blue square' -> 'a blue circle left of a red square' (colour) or
    'a red square left of a blue circle' (shape): the same words, bound the other way.
    """
    _check_scenes(scenes)
    if attribute not in SWAPPABLE:
        raise ValueError(f"attribute must be one of {SWAPPABLE}, got {attribute!r}")
    if not bool(scenes[:, 1, PRESENT].all()):
        raise ValueError(f"scenes must all have two objects to swap attributes between them; "
                         f"{int((scenes[:, 1, PRESENT] == 0).sum())} of {len(scenes)} have one "
                         f"(sample_scenes(..., two_object_prob=1.0) makes only two-object scenes)")
    col = COLOR if attribute == "color" else SHAPE
    swapped = scenes.clone()
    swapped[:, 0, col], swapped[:, 1, col] = scenes[:, 1, col], scenes[:, 0, col]
    return swapped


def swap_changes_binding(scenes: torch.Tensor) -> torch.Tensor:
    """(N,) bool: two objects that differ in colour and in shape, so either swap changes which colour goes with
    which shape. False elsewhere, even where a swap changes the caption: swapping the shapes of 'a red circle left
    of a red square' gives 'a red square left of a red circle', the same colours bound to the same shapes."""
    _check_scenes(scenes)
    return ((scenes[:, 1, PRESENT] == 1) & (scenes[:, 0, COLOR] != scenes[:, 1, COLOR])
            & (scenes[:, 0, SHAPE] != scenes[:, 1, SHAPE]))


NUM_SWAP_FAMILIES = (len(COLORS) * (len(COLORS) - 1) // 2) * (len(SHAPES) * (len(SHAPES) - 1) // 2)  # 28 x 15


def swap_family(scenes: torch.Tensor) -> torch.Tensor:
    """(N,) long: each scene's swap family (lesson 11), an id in [0, NUM_SWAP_FAMILIES), where swap_changes_binding
    holds, else -1. A family is a pair of colours with a pair of shapes; its four pairings are a picture, its colour
    twin, its shape twin and both swaps (the picture mirrored), so swap_attribute never leaves a family."""
    _check_scenes(scenes)
    def pair_id(a, b, n):                          # the unordered pair {a, b}, a != b, as 0 .. n(n-1)/2 - 1
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        return lo * n - lo * (lo + 1) // 2 + hi - lo - 1
    colours = pair_id(scenes[:, 0, COLOR], scenes[:, 1, COLOR], len(COLORS))
    shapes = pair_id(scenes[:, 0, SHAPE], scenes[:, 1, SHAPE], len(SHAPES))
    family = colours * (len(SHAPES) * (len(SHAPES) - 1) // 2) + shapes
    return torch.where(swap_changes_binding(scenes), family, torch.full_like(family, -1))


def binding_negative(scenes: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """NegCLIP-style negatives (lesson 11): the colours or the shapes swapped between the two objects (chosen
    at random) where the objects differ in colour and in shape, else hard_negative's one changed attribute."""
    _check_scenes(scenes)
    g = generator
    neg = hard_negative(scenes, generator=g)                                       # (N, 2, 5) the fallback
    use_shape = torch.randint(2, (len(scenes),), generator=g).bool()              # (N,) which swap
    ok = swap_changes_binding(scenes)                                              # (N,)
    if ok.any():
        two = scenes[ok]
        swapped = torch.where(use_shape[ok, None, None], swap_attribute(two, "shape"), swap_attribute(two, "color"))
        neg[ok] = swapped
    return neg


def true_captions(scenes: torch.Tensor, *, parts: bool = False) -> list[set[str]]:
    """For each scene, every caption the templates write that describes it (lessons 05 and 06): all of its own
    templates, and with two objects the "and" templates in either order. `parts=True` adds what is true of one of
    two objects: each alone in the one-object templates without a position ("a red circle" beside a blue square)."""
    _check_scenes(scenes)
    out: list[set[str]] = [set() for _ in range(len(scenes))]

    def add(part: torch.Tensor, rows: list[int], templates) -> None:
        for k in templates:                # every template given: describe draws nothing
            for i, caption in zip(rows, describe(part, template=k)):
                out[i].add(caption)

    two = scenes[:, 1, PRESENT] == 1                                              # (N,) two objects
    if (~two).any():
        add(scenes[~two], (~two).nonzero().flatten().tolist(), range(len(SINGLE_TEMPLATES)))
    if two.any():
        pairs, rows = scenes[two], two.nonzero().flatten().tolist()               # (M, 2, 5)
        add(pairs, rows, range(len(PAIR_TEMPLATES)))
        add(pairs.flip(1), rows, [k for k, t in enumerate(PAIR_TEMPLATES) if " and " in t])
        for slot in (0, 1) if parts else ():
            alone = torch.zeros_like(pairs)
            alone[:, 0] = pairs[:, slot]                                          # that object, slot 2 empty
            add(alone, rows, [k for k, t in enumerate(SINGLE_TEMPLATES) if "{where}" not in t])
    return out


@dataclass
class ShapesWorld:
    """A generated dataset: uint8 images (N, 3, H, W), their captions and scene attributes."""

    images: torch.Tensor
    captions: list[str]
    scenes: torch.Tensor

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        return self.images[i], self.captions[i]

    @property
    def labels(self) -> torch.Tensor:
        """The colour x shape class id of the first object of each scene: (N,)."""
        return combo_index(self.scenes[:, 0, COLOR], self.scenes[:, 0, SHAPE])

    @classmethod
    def generate(cls, n: int, *, split: str = "train", seed: int = 0, resolution: int = 32,
                 two_object_prob: float = 0.3, jitter: float = 0.03) -> "ShapesWorld":
        """Make n seeded image-caption pairs from one split ('train', 'heldout' or 'all')."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int (the same seed gives the same data), got {seed!r}")
        g = torch.Generator().manual_seed(seed)
        scenes = sample_scenes(n, split=split, two_object_prob=two_object_prob, generator=g)
        images = render(scenes, resolution, jitter=jitter, generator=g)
        return cls(images, describe(scenes, generator=g), scenes)


def check_uint8(images: torch.Tensor, name: str = "images") -> None:
    """Refuse pixels that are not uint8 in [0, 255], saying how to convert them.

    Float pixels are ambiguous: torchvision's ToTensor() gives [0, 1], other code [0, 255] or
    already [-1, 1], and no test on the values tells them apart safely. Read as if they were
    uint8, [0, 1] floats become [-1, -0.992]: a black picture the model would silently train on.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a uint8 torch.Tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        return
    seen = ""
    if images.numel() and not images.is_complex():
        seen = f" with values in [{images.min().item():.4g}, {images.max().item():.4g}]"
    raise TypeError(
        f"{name} must be uint8 pixels in [0, 255], got {images.dtype}{seen}. Convert floats in [0, 1] "
        f"(torchvision's ToTensor()) with (x * 255).round().to(torch.uint8), floats in [0, 255] with "
        f"x.round().clamp(0, 255).to(torch.uint8)")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 3, H, W) to floats centred on 0, the encoders' input; other dtypes raise."""
    check_uint8(images)
    return images.float().div(127.5).sub(1.0)


# --- The Flickr30k caption format: the bring-your-own-data path (lesson 02) -------------------

def write_caption_dataset(dataset: ShapesWorld, root: str | os.PathLike,
                          captions_per_image: int = 1, ann_file: str = "captions.txt") -> str:
    """Write images as PNG files and a Flickr30k-style `image.png#N<TAB>caption` file; return its path.

    torchvision.datasets.Flickr30k(root, ann_file) reads what this writes. With
    captions_per_image > 1 the extra captions come from the other templates of the same scene
    (at most as many as it has distinct templates: 6 for one object, 4 for two).
    """
    from PIL import Image

    if not 1 <= captions_per_image <= 10:  # Flickr30k's '#N' is a single digit
        raise ValueError(f"captions_per_image must be in 1..10, got {captions_per_image}")
    os.makedirs(root, exist_ok=True)
    lines = []
    for i in range(len(dataset)):
        name = f"shape_{i:05d}.png"
        Image.fromarray(dataset.images[i].permute(1, 2, 0).numpy()).save(os.path.join(root, name))
        captions = [dataset.captions[i]]
        for t in range(captions_per_image * 2):
            if len(captions) == captions_per_image:
                break
            extra = describe(dataset.scenes[i:i + 1], template=t)[0]    # a given template: no random draw
            if extra not in captions:
                captions.append(extra)
        lines += [f"{name}#{k}\t{c}" for k, c in enumerate(captions)]
    path = os.path.join(root, ann_file)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def read_caption_file(ann_file: str | os.PathLike) -> dict[str, list[str]]:
    """Read a caption file into {image file name: [captions in order]}.

    Two formats: Flickr30k's `image.jpg#N<TAB>caption` lines (what `write_caption_dataset` writes,
    and Flickr8k's `Flickr8k.token.txt` and Flickr30k's `results_20130124.token` as downloaded), and
    the Kaggle `captions.txt` CSV whose first line is the header `image,caption`. Windows line
    endings and a UTF-8 byte-order mark are fine. A malformed line, an empty caption, a file that is
    not UTF-8 or a file with no captions raises ValueError naming the file and the line.
    """
    captions, _ = _parse_caption_file(ann_file)
    return captions


_CSV_HEADER = b"image,caption"  # the Kaggle Flickr8k / Flickr30k captions.txt


def _parse_caption_file(ann_file) -> tuple[dict[str, list[str]], dict[str, int]]:
    """{name: [captions]} and {name: the line of its first caption} (for later error messages)."""
    with open(ann_file, "rb") as fh:
        raw = fh.read()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ValueError(f"{ann_file}: the file is UTF-16 text; save it as UTF-8")
    raw = raw.removeprefix(codecs.BOM_UTF8)  # Notepad and Excel write one
    lines = raw.splitlines()                 # '\n', '\r\n' (Windows) and '\r' all end a line
    is_csv = bool(lines) and lines[0].strip().lower() == _CSV_HEADER
    captions: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for lineno, raw_line in enumerate(lines, 1):
        if is_csv and lineno == 1:
            continue                         # the header
        where = f"{ann_file}:{lineno}"
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start}); "
                             f"save the file as UTF-8") from None
        if not line.strip():
            continue                         # blank lines are skipped (still counted)
        if is_csv:
            row = next(csv.reader([line]))   # a caption with a comma comes in quotes
            name, caption = (row[0], ",".join(row[1:])) if len(row) >= 2 else ("", "")
            if not name:
                raise ValueError(f"{where}: expected 'image,caption' (the header says CSV), got {line!r}")
        else:
            key, tab, caption = line.partition("\t")
            name, hash_, number = key.rpartition("#")
            if not tab or not hash_ or not number.isdigit() or not name:
                raise ValueError(f"{where}: expected 'image#N<TAB>caption', got {line!r}")
        if not caption.strip():
            raise ValueError(f"{where}: empty caption for {name!r}")
        captions.setdefault(name, []).append(caption.strip())
        first_line.setdefault(name, lineno)
    if not captions:
        what = "only the header" if is_csv else "no caption lines (it is empty)"
        raise ValueError(f"{ann_file}: no captions: the file has {what}")
    return captions, first_line


MAX_IMAGE_PIXELS = 8192 * 8192  # ~67 megapixels, ~200 MB as RGB: any camera photo, below PIL's own
                                # DecompressionBombWarning (~89 MP); larger is refused, not decoded


def load_caption_dataset(root: str | os.PathLike, ann_file: str = "captions.txt",
                         resolution: int = 32, *,
                         max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[torch.Tensor, list[str]]:
    """Load images and captions (first caption per image) from a folder and its caption file.

    This is how to bring your own Flickr8k/Flickr30k-style data: images are resized to the model's
    resolution; tokenise the captions with a tokenizer built from them. `ann_file` is a path
    relative to `root` (or absolute); image names must be files inside `root`: a name with '..',
    an absolute name or a symlink leading out of `root` is refused before any image is opened.
    A missing image, a file that is not an image, or one of more than `max_pixels` pixels raises
    ValueError naming the caption file and line.
    """
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    if not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    ann_path = os.path.join(root, ann_file)
    captions, first_line = _parse_caption_file(ann_path)
    names = sorted(captions)
    # Check every name first: a caption file must not make us read anything outside root.
    paths = [_image_path(root, n, f"{ann_path}:{first_line[n]}") for n in names]
    images = [_load_image(p, n, resolution, max_pixels, f"{ann_path}:{first_line[n]}")
              for p, n in zip(paths, names)]
    return torch.stack(images), [captions[n][0] for n in names]


def _image_path(root, name: str, where: str) -> str:
    """The real path of image `name`, which must be an existing file inside root."""
    parts = re.split(r"[\\/]", name)
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor or ".." in parts:
        raise ValueError(f"{where}: image name {name!r} points outside the data folder; "
                         f"use a relative name inside it (no '..', no absolute path)")
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, name))  # follows symlinks, opens nothing
    if os.path.commonpath([real_root, path]) != real_root:
        raise ValueError(f"{where}: image {name!r} is a link to {path}, outside the data folder {real_root}")
    if not os.path.isfile(path):
        raise ValueError(f"{where}: image {name!r} not found in {root}")
    return path


def _load_image(path: str, name: str, resolution: int, max_pixels: int, where: str) -> torch.Tensor:
    """One image file as uint8 (3, resolution, resolution); undecodable or huge files raise ValueError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # PIL only warns between ~89 and ~179 megapixels
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)        # reads the header, not the pixels
    except UnidentifiedImageError:
        raise ValueError(f"{where}: {name!r} is not an image file PIL can read") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ValueError(f"{where}: image {name!r} is too large to decode safely: {e}") from None
    except OSError as e:                 # unreadable: permissions, a broken disk, ...
        raise ValueError(f"{where}: image {name!r} could not be read: {e}") from e
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise ValueError(f"{where}: image {name!r} is {w}x{h} = {w * h:,} pixels, more than "
                             f"max_pixels={max_pixels:,}; too large to decode safely (shrink it first)")
        try:
            rgb = im.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
        except Exception as e:  # truncated or corrupt data: PIL raises OSError, SyntaxError, ...
            raise ValueError(f"{where}: image {name!r} could not be decoded: {e}") from e
    return (torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
            .view(resolution, resolution, 3).permute(2, 0, 1))
