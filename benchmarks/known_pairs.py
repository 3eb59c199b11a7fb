"""Does a trained model lean on colour x shape pairs it has seen? (lesson 08; benchmarks/NOTES.md, ninth round)

    python benchmarks/known_pairs.py 0 1 2 3 4     # one line per seed; about 15 s a seed on 2 cores

Lesson 08 cannot test this on held-out pictures: ShapesWorld holds out one shape per colour, so a mistake in
the shape alone must name a seen pair. On pictures of the *training* combinations it can: a shape mistake
on a red square may name red's held-out shape or a seen one. For each seed this trains lesson 08's model
(250 steps on 12,000 pairs), asks the 48-way zero-shot question on new one-object pictures of the training
combinations, counts the shape-only mistakes by colour, true shape and answered shape, and fits

    log E[count(c, s -> s')] = log N(c, s) + a(c, s) + b(s -> s') + log rho * [s' is colour c's held-out shape]

by Poisson maximum likelihood: a absorbs how hard each picture class is, b which shapes look alike, and the
rate ratio rho < 1 would be a pull towards known pairs. Its 95 % interval comes from the Fisher information.
"""

from __future__ import annotations

import math
import sys

import torch


def mistake_counts(seed: int, n_pictures: int = 20000) -> tuple[torch.Tensor, torch.Tensor, dict[int, int]]:
    """Train lesson 08's model; return N (C, S) pictures per class, Y (C, S, S) shape-only mistakes
    (colour, true shape, answered shape), and each colour's held-out shape."""
    from clipcourse import data, evaluate, model, text, train

    tok = text.Tokenizer.for_shapesworld()
    world = data.ShapesWorld.generate(12000, seed=seed)
    clip, _ = train.train(model.build_model(tok, seed=seed), world.images, tok(world.captions),
                          train.TrainConfig(steps=250, seed=seed), progress=False)
    classes = evaluate.zero_shot_classifier(clip, tok, [data.combo_name(i) for i in range(data.NUM_COMBOS)])
    seen = data.ShapesWorld.generate(n_pictures, split="train", seed=seed + 7, two_object_prob=0.0)
    answer = (evaluate.embed_images(clip, seen.images) @ classes.T).argmax(dim=1)          # (n,)
    n_shapes, n_colours = len(data.SHAPES), len(data.COLOR_NAMES)
    colour, shape = seen.labels // n_shapes, seen.labels % n_shapes
    said_colour, said_shape = answer // n_shapes, answer % n_shapes
    N = torch.zeros(n_colours, n_shapes).index_put_((colour, shape), torch.ones(len(colour)), accumulate=True)
    shape_only = (said_colour == colour) & (said_shape != shape)
    Y = torch.zeros(n_colours, n_shapes, n_shapes).index_put_(
        (colour[shape_only], shape[shape_only], said_shape[shape_only]), torch.ones(int(shape_only.sum())),
        accumulate=True)
    held_shape = {k // n_shapes: k % n_shapes for k in data.heldout_combos()}
    return N, Y, held_shape


def fit_rate_ratio(N: torch.Tensor, Y: torch.Tensor, held_shape: dict[int, int],
                   penalty: float = 1e-3) -> tuple[float, float, float]:
    """rho and its 95 % interval (low, high) from the Poisson model in the module's docstring."""
    n_colours, n_shapes = N.shape
    N, Y = N.double(), Y.double()
    H = torch.zeros(n_colours, n_shapes, n_shapes, dtype=torch.float64)   # 1 where s' is colour c's held-out shape
    for c, s in held_shape.items():
        H[c, :, s] = 1.0
    cells = (N[:, :, None] > 0) & ~torch.eye(n_shapes, dtype=torch.bool)[None]    # pictures exist, s' != s
    size = n_colours * n_shapes + n_shapes * n_shapes + 1

    def nll(theta):
        a = theta[:n_colours * n_shapes].view(n_colours, n_shapes)
        b = theta[n_colours * n_shapes:-1].view(n_shapes, n_shapes)
        log_mu = N.clamp(min=1).log()[:, :, None] + a[:, :, None] + b[None] + theta[-1] * H
        return -(Y * log_mu - log_mu.exp())[cells].sum() + penalty * (a.pow(2).sum() + b.pow(2).sum())

    theta = torch.zeros(size, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nll(theta)
        loss.backward()
        return loss

    opt.step(closure)
    fisher = torch.autograd.functional.hessian(nll, theta.detach())
    se = torch.linalg.pinv(fisher)[-1, -1].sqrt().item()
    log_rho = theta[-1].item()
    return math.exp(log_rho), math.exp(log_rho - 1.96 * se), math.exp(log_rho + 1.96 * se)


def main(seeds: list[int]) -> None:
    for seed in seeds:
        N, Y, held_shape = mistake_counts(seed)
        rho, low, high = fit_rate_ratio(N, Y, held_shape)
        print(f"seed {seed}: {int(Y.sum())} shape-only mistakes; rate ratio for naming the colour's held-out pair "
              f"{rho:.2f} (95 % interval {low:.2f}–{high:.2f})", flush=True)


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [0])
