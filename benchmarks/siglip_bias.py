"""Lesson 09's comparison with SigLIP's bias started at each batch's own log-odds, log(1/(B - 1)).

    python benchmarks/siglip_bias.py 0 1 2      # the seeds (default 0 1)

The lesson starts b at -10, the paper's prior for batches of 32k; this asks whether that start, far below
the log-odds of a positive at batches of 8 to 128, decides the lesson's verdict. For each batch size it trains
the softmax, the sigmoid from -10 and the sigmoid from log(1/(B - 1)) with the lesson's settings, then prints
each group's means and the lesson's verdict with the matched start in place of -10 (benchmarks/NOTES.md,
tenth round).
"""

from __future__ import annotations

import math
import sys

from clipcourse import siglip


def main(seeds: tuple[int, ...]) -> None:
    rows = []
    for batch in (8, 32, 128):
        start = math.log(1 / (batch - 1))
        rows += siglip.compare((batch,), seeds, 2048, bias_starts=(start,), bias_batch_size=batch, temperature_lr=0.3)
    summary = siglip.summarize(rows)
    for e in summary:
        start = "" if e["logit_bias"] is None else f", b from {e['logit_bias']:.2f} to {e['final_bias_mean']:.2f}"
        print(f"batch {e['batch_size']:>3} {e['loss']:<7}: training-combination accuracy {e['train_combo_acc_mean']:.1%} "
              f"± {e['train_combo_acc_std']:.1%}{start}")
    matched = [e for e in summary if e["loss"] == "clip" or e["logit_bias"] != siglip.SIGLIP_INIT_BIAS]
    for e in matched:                    # the verdict reads the sigmoid's runs from b = -10: put the matched ones there
        if e["loss"] == "siglip":
            e["logit_bias"] = siglip.SIGLIP_INIT_BIAS
    print("with the matched start:", siglip.small_batch_verdict(matched))


if __name__ == "__main__":
    main(tuple(int(s) for s in sys.argv[1:]) or (0, 1))
