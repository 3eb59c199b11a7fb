"""Lesson 11's swap test in each caption template, over draws of data and weights (benchmarks/NOTES.md, twelfth round).

    python benchmarks/binding_route.py DATA_SEED WEIGHT_SEED TAU {plain,hard} [--all-families] [--relation-negatives]
                                       [--steps STEPS] [--last-kernel {2,3}]

Trains one of the lesson's models (600 steps unless --steps, batch 64, float32, one thread, 3x3 tower, tau fixed) on the lesson's
training data drawn with DATA_SEED (the lesson's held-out swap families unless --all-families, the lesson's data
before it held families out) and prints one JSON line: the mean swap-test score (colour and shape swaps, a tie half)
in the "and", "left of" and "right of" templates, on all test pictures and on seen and new pairings, and on the
training pictures; "relation" compares "X left of Y" with "X right of Y"; "mirror cosine" is the mean cosine of the
image features of a picture and of its mirror (the objects' places exchanged), before and after training; "left
colour probe" is how well a linear read-out of the image features names the left object's colour (half the test
pictures to fit, half to score; chance 1/8, and 1/2 for features that hold both colours but not where they are);
"probes" gives the same read-out for each object's colour and shape. The lesson's own run is 0 0 0.02 and 0.1.
--relation-negatives (with hard): half of the pictures whose caption is a "left of" or "right of" caption get, instead
of their swapped twin, the same caption with "left" and "right" exchanged ("X left of Y" -> "X right of Y").
"""
import argparse
import json

import torch

from clipcourse import data, evaluate, model, text, train
from clipcourse.encoders import ImageEncoderConfig


def mirror(scenes: torch.Tensor) -> torch.Tensor:
    """The two objects' colours and shapes exchanged: the same picture with the objects' places swapped."""
    return data.swap_attribute(data.swap_attribute(scenes, "color"), "shape")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_seed", type=int); p.add_argument("weight_seed", type=int); p.add_argument("tau", type=float)
    p.add_argument("kind", choices=("plain", "hard")); p.add_argument("--all-families", action="store_true")
    p.add_argument("--relation-negatives", action="store_true")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--last-kernel", type=int, default=3, help="3: the lesson's tower; 2: lesson 06's default")
    a = p.parse_args()
    torch.set_num_threads(1)
    tok = text.Tokenizer.for_shapesworld()
    g = torch.Generator().manual_seed(7)                                       # the lesson's test set
    test = data.sample_scenes(4000, split="all", two_object_prob=1.0, generator=g)
    test = test[data.swap_changes_binding(test)]
    test_images = data.render(test, jitter=0.03, generator=g)
    held = torch.randperm(data.NUM_SWAP_FAMILIES, generator=torch.Generator().manual_seed(0))[:70]
    in_held = lambda s: torch.isin(data.swap_family(s), held)
    pool = data.ShapesWorld.generate(12000 if a.all_families else 15000, split="all", seed=a.data_seed, two_object_prob=1.0)
    negatives = data.binding_negative(pool.scenes, generator=torch.Generator().manual_seed(2))
    keep = (torch.arange(12000) if a.all_families else (~in_held(pool.scenes) & ~in_held(negatives)).nonzero().flatten()[:12000])
    captions = data.describe(pool.scenes, generator=torch.Generator().manual_seed(1))
    negative_captions = data.describe(negatives, generator=torch.Generator().manual_seed(1))
    if a.relation_negatives:                       # "X left of Y" <-> "X right of Y": the mirrored scene, other template
        as_left, as_right = (data.describe(mirror(pool.scenes), template=t) for t in (1, 2))
        coin = torch.rand(len(captions), generator=torch.Generator().manual_seed(3)) < 0.5
        for i, c in enumerate(captions):
            if coin[i] and " left of " in c:
                negative_captions[i] = as_right[i]
            elif coin[i] and " right of " in c:
                negative_captions[i] = as_left[i]
    tokens = tok([captions[i] for i in keep.tolist()])
    negative_tokens = tok([negative_captions[i] for i in keep.tolist()]) if a.kind == "hard" else None
    m = model.build_model(tok, seed=a.weight_seed, temperature=a.tau, learnable_temperature=False,
                          image=ImageEncoderConfig(last_kernel=a.last_kernel))
    config = train.TrainConfig(steps=a.steps, batch_size=64, precision="float32", seed=a.weight_seed)
    mirror_pair = [data.render(s, jitter=0.03, generator=torch.Generator().manual_seed(8))   # the same jitter
                   for s in (test, mirror(test))]
    mirror_cosine = lambda: (evaluate.embed_images(m, mirror_pair[0]) * evaluate.embed_images(m, mirror_pair[1])).sum(-1).mean().item()
    untrained_mirror_cosine = mirror_cosine()
    untrained_probes = probes(evaluate.embed_images(m, test_images), test)
    m, history = train.train(m, pool.images[keep], tokens, config, hard_negative_tokens=negative_tokens, progress=False)

    def scores(scenes, images, template):                                      # (n,) per picture, colour and shape
        f = evaluate.embed_images(m, images)
        sims = lambda s: (f * evaluate.embed_texts(m, tok(data.describe(s, template=template)))).sum(-1)
        true = sims(scenes)
        return sum((1 + torch.sign(true - sims(data.swap_attribute(scenes, k)))) / 2 for k in data.SWAPPABLE) / 2

    new = in_held(test)
    out = {"args": vars(a), "final_loss": history.loss[-1]}
    for name, template in (("and", 0), ("left of", 1), ("right of", 2)):
        s = scores(test, test_images, template)
        out[name] = {"all": s.mean().item(), "seen": s[~new].mean().item(), "new": s[new].mean().item()}
    trained = pool.scenes[keep]
    rows = data.swap_changes_binding(trained).nonzero().flatten()[:3000]
    out["training pictures"] = {n: scores(trained[rows], pool.images[keep][rows], t).mean().item()
                                for n, t in (("left of", 1), ("right of", 2))}
    f = evaluate.embed_images(m, test_images)
    left = (f * evaluate.embed_texts(m, tok(data.describe(test, template=1)))).sum(-1)
    right = (f * evaluate.embed_texts(m, tok(data.describe(mirror(test), template=2)))).sum(-1)   # "X right of Y"
    out["relation"] = ((1 + torch.sign(left - right)) / 2).mean().item()
    out["mirror cosine"] = {"untrained": untrained_mirror_cosine, "trained": mirror_cosine()}   # image features only
    trained_probes = probes(f, test)                                   # colour: chance 1/8, both but not where: 1/2
    out["left colour probe"] = {"untrained": untrained_probes["left colour"], "trained": trained_probes["left colour"]}
    out["probes"] = {"untrained": untrained_probes, "trained": trained_probes}
    print(json.dumps(out))


def probes(features: torch.Tensor, scenes: torch.Tensor) -> dict:
    """The linear read-out of each object's colour and shape (benchmarks/NOTES.md, thirteenth and fourteenth rounds)."""
    return {f"{side} {name}": evaluate.linear_probe(features, scenes[:, k, attribute])
            for k, side in enumerate(("left", "right")) for name, attribute in (("colour", data.COLOR), ("shape", data.SHAPE))}


if __name__ == "__main__":
    main()
