"""The course's six claims about τ, and the verdicts the lessons measure (lessons 00 and 04–08).

Lesson 00 asks the six questions; each lesson that tests one measures it, turns its numbers into a
`Verdict` with one of the functions below, prints it and `record`s it; lesson 08 gathers the six
answers side by side (`recorded`, `table`). A verdict is never written by hand: it is computed from the
run's own numbers, so it can come out differently on another computer, and the lessons' prose is
written to stay true either way.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

CLAIMS = {
    "C1": "training pulls each matching image-text pair together and pushes every non-matching pair apart",
    "C2": "every similarity score is divided by τ before the softmax",
    "C3": "a low τ sharpens the softmax and concentrates the learning signal on the hardest negatives",
    "C4": "a high τ softens it, and the model learns too little from the negatives",
    "C5": "a too-low τ fixates on tiny differences and generalises worse",
    "C6": "a learnable τ finds a good focus by itself, close to the best fixed τ, in one run",
}
LESSONS = {"C1": "06", "C2": "04", "C3": "05", "C4": "07", "C5": "07", "C6": "07"}

HOLDS = "holds"
FAILS = "does not hold at this scale"
UNCLEAR = "unclear"
MARGIN = 0.05           # accuracy differences below five percentage points count as noise
MATCH = 0.03            # two runs whose training accuracies differ by at most this count as equally fitted (C5)
# Student's t, one-sided 5 %, by degrees of freedom (a table of the t distribution; beyond 10, 10's, which is stricter)
T_95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812}


@dataclass(frozen=True)
class Verdict:
    """One claim's answer, measured: HOLDS, FAILS or UNCLEAR, and the numbers behind it."""

    claim: str
    answer: str
    evidence: str

    def __str__(self) -> str:
        return f"{self.claim} {self.answer}: {self.evidence}"


def _verdict(claim: str, answer: str, evidence: str) -> Verdict:
    if claim not in CLAIMS:
        raise ValueError(f"claim must be one of {sorted(CLAIMS)}, got {claim!r}")
    if answer not in (HOLDS, FAILS, UNCLEAR):
        raise ValueError(f"answer must be {HOLDS!r}, {FAILS!r} or {UNCLEAR!r}, got {answer!r}")
    return Verdict(claim, answer, evidence)


def _check_finite(**numbers: float) -> None:
    """A ValueError naming the first number that is NaN or infinite: no verdict can be honest about it."""
    for name, value in numbers.items():
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_taus(taus, name: str) -> None:
    """Every τ finite and > 0, each given once (a repeated or NaN τ has no place in an order of τ)."""
    if not all(math.isfinite(t) and t > 0 for t in taus) or len(set(taus)) < len(taus):
        raise ValueError(f"{name}: every τ must be positive and finite, and given once, got {list(taus)}")


_SUMMARY_NUMBERS = ("acc_mean", "acc_std", "train_combo_acc_mean", "train_combo_acc_std", "heldout_acc_mean",
                    "heldout_acc_std", "final_tau_mean")


def _check_entries(entries: list[dict], name: str) -> list[dict]:
    """A summary's entries as experiments.summarize makes them: τ ascending and distinct, the numbers the
    verdicts read finite; else a ValueError naming `name`. Returns the entries."""
    taus = [e["tau"] for e in entries]
    _check_taus(taus, name)
    if taus != sorted(taus):
        raise ValueError(f"{name} must be in ascending τ, as experiments.summarize returns it, got τ {taus}")
    for e in entries:
        bad = [key for key in _SUMMARY_NUMBERS if key in e and not math.isfinite(e[key])]
        if bad:
            raise ValueError(f"{name} holds NaN or infinity at τ = {e['tau']:.3g} ({', '.join(bad)}): did a run fail?")
    return entries


def _check_rows(rows) -> list[dict]:
    """A sweep's rows as experiments.sweep makes them: one dict per run (learnable, τ, seed), held-out accuracies
    finite; else a ValueError naming the row. Returns them as a list (a generator is read once)."""
    rows = list(rows or ())
    runs = [(r["learnable"], r["tau"], r["seed"]) for r in rows]
    for i, run in enumerate(runs):
        if run in runs[:i]:
            raise ValueError(f"rows[{i}] repeats an earlier run (learnable, τ, seed) = {run}: one row per run, "
                             "as experiments.sweep returns (were two sweeps' rows joined?)")
    _check_finite(**{f"rows[{i}]['heldout_acc']": r["heldout_acc"] for i, r in enumerate(rows)})
    return rows


def clearly_below(a_mean: float, a_std: float, b_mean: float, b_std: float, margin: float = MARGIN) -> bool:
    """Is a clearly below b: by more than `margin` and by more than the two seed spreads together?"""
    gap = b_mean - a_mean
    return gap > margin and gap > a_std + b_std and not math.isnan(gap)


# --- One function per claim: numbers in, verdict out ------------------------------------------

def c1_pull_push(pos_before: float, pos_after: float, neg_before: float, neg_after: float) -> Verdict:
    """C1 (lesson 06): mean similarity of positives and negatives before and after training.

    The loss compares each negative with its positive, so "pushed apart" is measured relative to the
    positives: the gap (positives minus negatives) must grow, and the positives must rise.
    """
    _check_finite(pos_before=pos_before, pos_after=pos_after, neg_before=neg_before, neg_after=neg_after)
    gap_before, gap_after = pos_before - neg_before, pos_after - neg_after
    holds = pos_after > pos_before and gap_after > gap_before
    relative = ("; apart relative to the positives only: the negatives' own mean rose"
                if holds and neg_after >= neg_before else "")
    return _verdict("C1", HOLDS if holds else FAILS,
                    f"positives {pos_before:+.2f} → {pos_after:+.2f}, negatives {neg_before:+.2f} → "
                    f"{neg_after:+.2f}, gap {gap_before:+.2f} → {gap_after:+.2f}{relative}")


def c2_divided_by_tau(by_hand: float, package: float, reference: float, undivided: float) -> Verdict:
    """C2 (lesson 04): the loss written by hand with sims / τ equals clip_loss and open_clip's, and
    differs from the loss without the division."""
    _check_finite(by_hand=by_hand, package=package, reference=reference, undivided=undivided)
    same = math.isclose(by_hand, package, rel_tol=1e-5) and math.isclose(by_hand, reference, rel_tol=1e-5)
    differs = not math.isclose(by_hand, undivided, rel_tol=1e-3)
    return _verdict("C2", HOLDS if same and differs else FAILS,
                    f"by hand {by_hand:.4f} = clipcourse {package:.4f} = open_clip {reference:.4f}; "
                    f"without ÷τ it would be {undivided:.4f}")


def c3_sharpens(taus, entropies, hardest_shares) -> Verdict:
    """C3 (lesson 05): as τ falls, the softmax's entropy falls and the hardest negative's share of
    the gradient rises (taus in any order; one entropy and one share per τ).

    For exact softmaxes of any similarities this cannot fail (P_j / P_k = e^((s_j - s_k) / τ)): the
    verdict checks the arithmetic, and its evidence says how large the effect is."""
    if not len(taus) == len(entropies) == len(hardest_shares) >= 2:
        raise ValueError(f"need at least two τ with one entropy and one share each, got {len(taus)}, "
                         f"{len(entropies)} and {len(hardest_shares)}")
    _check_taus(taus, "taus")
    _check_finite(**{f"entropies[{i}]": x for i, x in enumerate(entropies)},
                  **{f"hardest_shares[{i}]": x for i, x in enumerate(hardest_shares)})
    order = sorted(range(len(taus)), key=lambda i: taus[i])           # ascending τ
    ent = [entropies[i] for i in order]
    share = [hardest_shares[i] for i in order]
    sharper = all(a < b for a, b in zip(ent, ent[1:]))              # entropy rises with τ
    focused = all(a > b for a, b in zip(share, share[1:]))           # the hardest share falls with τ
    lo, hi = order[0], order[-1]
    return _verdict("C3", HOLDS if sharper and focused else FAILS,
                    f"from τ = {taus[hi]:.3g} down to {taus[lo]:.3g} the entropy falls {entropies[hi]:.2f} → "
                    f"{entropies[lo]:.2f} nats and the hardest negative's gradient share rises "
                    f"{hardest_shares[hi]:.0%} → {hardest_shares[lo]:.0%}")


def best_fixed(summary: dict) -> dict:
    """The fixed τ of a sweep summary with the best mean held-out accuracy."""
    if not summary.get("sweep"):
        raise ValueError("the summary holds no fixed-τ runs: give experiments.summarize a sweep with taus")
    return max(_check_entries(summary["sweep"], "summary['sweep']"), key=lambda e: e["acc_mean"])


def best_fixed_by_left_out_seed(rows: list[dict]) -> list[dict]:
    """The best fixed τ picked without the seed it is scored on (lesson 07): for each seed, the fixed τ
    with the best mean held-out accuracy over the *other* seeds, and that τ's accuracy on the seed.

    `best_fixed` picks on the same scores it reports, so its accuracy flatters it; the mean of these
    left-out scores does not. Returns [{"seed", "tau", "heldout_acc"}] in seed order.
    """
    fixed = [r for r in _check_rows(rows) if not r["learnable"]]
    seeds = sorted({r["seed"] for r in fixed})
    if len(seeds) < 2:
        raise ValueError(f"rows must hold fixed-τ runs of at least two seeds, got seeds {seeds}")
    out = []
    for seed in seeds:
        others: dict[float, list[float]] = {}
        for r in fixed:
            if r["seed"] != seed:
                others.setdefault(r["tau"], []).append(r["heldout_acc"])
        tau = max(others, key=lambda t: sum(others[t]) / len(others[t]))
        scored = [r["heldout_acc"] for r in fixed if r["seed"] == seed and math.isclose(r["tau"], tau)]
        if not scored:
            raise ValueError(f"seed {seed} has no run at τ = {tau:.3g}, the τ its other seeds picked")
        out.append({"seed": seed, "tau": tau, "heldout_acc": scored[0]})
    return out


def near_best(summary: dict) -> list[dict]:
    """The fixed τ of a sweep summary whose held-out accuracy is not `clearly_below` the best fixed τ's,
    the best included, in the sweep's order: the τ this sweep cannot tell apart from the best (lesson 07)."""
    best = best_fixed(summary)
    return [e for e in summary["sweep"]
            if not clearly_below(e["acc_mean"], e["acc_std"], best["acc_mean"], best["acc_std"])]


def c4_high_tau(summary: dict) -> Verdict:
    """C4 (lesson 07): does the highest fixed τ learn less than the best fixed τ?

    "Learns too little" is about fitting, so the answer compares accuracy on new pictures of the
    *training* combinations: HOLDS when the highest τ is clearly below the best fixed τ there, UNCLEAR
    when it is lower but not clearly, FAILS otherwise. The held-out accuracies are in the evidence.
    """
    best, high = best_fixed(summary), summary["sweep"][-1]
    fit, fit_std = "train_combo_acc_mean", "train_combo_acc_std"
    below = clearly_below(high[fit], high[fit_std], best[fit], best[fit_std])
    answer = HOLDS if below else (UNCLEAR if high[fit] < best[fit] else FAILS)
    return _verdict("C4", answer,
                    f"training combinations {high[fit]:.1%} ± {high[fit_std]:.1%} at τ = {high['tau']:.3g} vs "
                    f"{best[fit]:.1%} ± {best[fit_std]:.1%} at the best fixed τ = {best['tau']:.3g} (held-out "
                    f"{high['acc_mean']:.1%} ± {high['acc_std']:.1%} vs {best['acc_mean']:.1%} ± {best['acc_std']:.1%})")


def c5_low_tau(fitted: dict, short: dict | None = None, fit_bar: float = 0.9) -> Verdict:
    """C5 (lesson 07): does a too-low τ generalise worse once it has fitted its training data?

    `fitted` summarises runs trained long enough to fit, at the lowest τ and at the best one (an
    experiments.summarize of two fixed τ): C5 holds when both fit their training combinations
    (accuracy ≥ fit_bar) and the gap from training to held-out combinations is clearly larger at the
    low τ (`MARGIN`, and the two seed spreads together), UNCLEAR when it is larger but not clearly, FAILS
    when it is not larger. If the low τ does not fit, the runs cannot separate generalisation from
    optimisation: UNCLEAR. The verdict measures "generalises worse"; "fixates on tiny differences" is a
    proposed reason that it does not measure.
    `short`, the short sweep, adds what it showed to the evidence, and a check at matched fit: the
    best τ trained longer fits better, which alone widens the contrast, so where the short sweep's
    best τ fits its training combinations as well as the low τ did (within `MATCH`), the low τ's gap
    must also be clearly wider than that run's, or the answer is unclear.
    """
    if len(fitted.get("sweep", [])) < 2:
        raise ValueError("fitted must summarise runs at two fixed τ (the lowest and the best)")
    _check_entries(fitted["sweep"], "fitted['sweep']")
    low, best = fitted["sweep"][0], fitted["sweep"][-1]
    gaps = {}
    for name, e in (("low", low), ("best", best)):
        gaps[name] = e["train_combo_acc_mean"] - e["heldout_acc_mean"]
    spread = low["heldout_acc_std"] + best["heldout_acc_std"]
    fits = low["train_combo_acc_mean"] >= fit_bar and best["train_combo_acc_mean"] >= fit_bar
    wider = gaps["low"] - gaps["best"]
    if not fits:
        answer = UNCLEAR
    elif wider > MARGIN and wider > spread:
        answer = HOLDS
    else:
        answer = UNCLEAR if wider > 0 else FAILS            # wider, but not clearly: unclear, as in C4
    evidence = (f"trained to fit, τ = {low['tau']:.3g}: training combinations {low['train_combo_acc_mean']:.1%}, "
                f"held-out {low['heldout_acc_mean']:.1%} (gap {gaps['low']:.1%}); τ = {best['tau']:.3g}: "
                f"{best['train_combo_acc_mean']:.1%}, {best['heldout_acc_mean']:.1%} (gap {gaps['best']:.1%})")
    if not fits:
        evidence += f"; a run below {fit_bar:.0%} on its training combinations has not fitted them"
    if short is not None:
        s_low, s_best = short["sweep"][0], best_fixed(short)
        behind = s_best["train_combo_acc_mean"] - s_low["train_combo_acc_mean"]
        fit_words = (f"reached only {s_low['train_combo_acc_mean']:.1%} on training combinations (vs "
                     f"{s_best['train_combo_acc_mean']:.1%} at τ = {s_best['tau']:.3g}): there it mostly optimised slower"
                     if behind > MARGIN else
                     f"fitted its training combinations {'better than' if behind < -MARGIN else 'about as well as'} "
                     f"τ = {s_best['tau']:.3g} ({s_low['train_combo_acc_mean']:.1%} vs {s_best['train_combo_acc_mean']:.1%})")
        evidence += f". In the short sweep τ = {s_low['tau']:.3g} {fit_words}"
        if abs(s_best["train_combo_acc_mean"] - low["train_combo_acc_mean"]) <= MATCH:
            matched_gap = s_best["train_combo_acc_mean"] - s_best["heldout_acc_mean"]
            wider_matched = gaps["low"] - matched_gap
            clear = wider_matched > MARGIN and wider_matched > low["heldout_acc_std"] + s_best["heldout_acc_std"]
            evidence += (f". At matched fit, τ = {s_best['tau']:.3g} of the short sweep: training combinations "
                         f"{s_best['train_combo_acc_mean']:.1%}, held-out {s_best['heldout_acc_mean']:.1%} "
                         f"(gap {matched_gap:.1%}), so the low τ's gap is {wider_matched * 100:+.1f} points wider"
                         + ("" if clear else ": not clearly, so the wider gap above may be the better fit"))
            if answer == HOLDS and not clear:
                answer = UNCLEAR
        else:
            evidence += (f". No matched fit: the short sweep's best τ reached {s_best['train_combo_acc_mean']:.1%} "
                         f"on training combinations, more than {MATCH:.0%} from the low τ's")
    evidence += ". (This measures \"generalises worse\", not the fixation on tiny differences.)"
    return _verdict("C5", answer, evidence)


def c6_learnable(summary: dict, rows: list[dict] | None = None) -> Verdict:
    """C6 (lesson 07): from every start, does learnable τ end close to the best fixed τ, in τ and in
    held-out accuracy?

    τ: the sweep cannot tell the best fixed τ from the others in `near_best`, so a start passes (✓) when
    its final τ is within 2× of every one of them, is unclear (?) when within 2× of some, and fails (✗)
    when within 2× of none. Accuracy: ✓ within one standard deviation of the best fixed τ's, ✗ clearly
    below it (`clearly_below`), ? in between. FAILS if any start has a ✗, UNCLEAR if any has a ?,
    else HOLDS.

    With the sweep's `rows`, the evidence also gives each start's accuracy minus the best fixed τ's
    seed by seed, with their mean and its standard error: runs of one seed share their initial weights
    and batches, so the differences can be compared with their own scatter rather than with the seeds'
    spread (with three seeds, one sign in every seed alone happens by chance one time in four). They
    settle the in-between case: a start marked ? whose paired mean is below zero by more than `MARGIN`
    and by more than a one-sided t test at 5 % allows (`T_95`: 2.92 standard errors with three seeds, not the
    normal 1.64 or a rule of thumb's 2, which with three seeds would pass one time in eleven by chance) is clearly
    below after all (✗).
    """
    if not isinstance(summary, Mapping) or isinstance(rows, Mapping):
        raise TypeError("summary must be experiments.summarize's dict and rows experiments.sweep's list, got "
                        f"{type(summary).__name__} and {type(rows).__name__}")
    starts = summary.get("learnable_starts") or []
    if not starts:
        raise ValueError("the summary holds no learnable-τ runs: run the sweep with learnable=True")
    _check_entries(starts, "summary['learnable_starts']")
    best, near, rows = best_fixed(summary), near_best(summary), _check_rows(rows)
    best_by_seed = {r["seed"]: r["heldout_acc"] for r in rows
                    if not r["learnable"] and math.isclose(r["tau"], best["tau"])}
    parts, marks = [], []
    for e in starts:
        within = [0.5 <= e["final_tau_mean"] / n["tau"] <= 2.0 for n in near]
        tau_mark = "✓" if all(within) else ("?" if any(within) else "✗")
        if e["acc_mean"] >= best["acc_mean"] - best["acc_std"]:
            acc_mark = "✓"
        else:
            acc_mark = "✗" if clearly_below(e["acc_mean"], e["acc_std"], best["acc_mean"], best["acc_std"]) else "?"
        marks += [tau_mark, acc_mark]
        ratios = ", ".join(f"{e['final_tau_mean'] / n['tau']:.2g}× {n['tau']:.3g}" for n in near)
        part = f"from {e['tau']:.3g}: τ {e['final_tau_mean']:.3g} ({ratios} {tau_mark}), accuracy {e['acc_mean']:.1%} {acc_mark}"
        paired = [d for _, d in sorted((r["seed"], r["heldout_acc"] - best_by_seed[r["seed"]]) for r in rows
                                       if r["learnable"] and math.isclose(r["tau"], e["tau"]) and r["seed"] in best_by_seed)]
        if paired:
            part += " (minus the best fixed τ's, seed by seed: " + ", ".join(f"{100 * d:+.1f}" for d in paired) + " points"
            if len(paired) > 1:
                mean, se = statistics.fmean(paired), statistics.stdev(paired) / math.sqrt(len(paired))
                part += f"; mean {100 * mean:+.1f}, standard error {100 * se:.1f}"
                t = T_95[min(len(paired) - 1, max(T_95))]                        # one-sided 5 %, n - 1 d.f.
                if acc_mark == "?" and mean < -MARGIN and mean + t * se < 0:   # paired: clearly below after all
                    acc_mark = marks[-1] = "✗"
                    part = part.replace(f"accuracy {e['acc_mean']:.1%} ?", f"accuracy {e['acc_mean']:.1%} ✗ (paired)")
            part += ")"
        parts.append(part)
    answer = FAILS if "✗" in marks else (UNCLEAR if "?" in marks else HOLDS)
    tied = [n for n in near if n is not best]
    head = f"best fixed τ = {best['tau']:.3g} at {best['acc_mean']:.1%} ± {best['acc_std']:.1%}"
    if tied:
        head += ", not clearly above " + ", ".join(f"τ = {n['tau']:.3g} ({n['acc_mean']:.1%} ± {n['acc_std']:.1%})"
                                                   for n in tied)
    return _verdict("C6", answer, head + "; " + "; ".join(parts))


# --- Recording verdicts, so that lesson 08 can show all six -----------------------------------

RESULTS_ENV = "CLIPCOURSE_RESULTS"


def results_path() -> Path:
    """Where verdicts are recorded: $CLIPCOURSE_RESULTS, else results/claims.json in the course folder,
    else ~/.cache/clipcourse/claims.json (the package installed away from a checkout)."""
    named = os.environ.get(RESULTS_ENV, "")
    if named:
        return Path(named).expanduser()
    from . import paths

    try:
        return paths.course_root() / "results" / "claims.json"
    except paths.CourseFilesNotFoundError:
        return Path.home() / ".cache" / "clipcourse" / "claims.json"


def record(verdict: Verdict, path: str | os.PathLike | None = None) -> Path:
    """Add (or replace) one verdict in the results file, atomically; return the file's path."""
    if not isinstance(verdict, Verdict):
        raise TypeError(f"verdict must be a claims.Verdict, got {type(verdict).__name__}")
    path = Path(path) if path is not None else results_path()
    found = recorded(path)
    found[verdict.claim] = verdict
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in sorted(found.items())}, indent=1, ensure_ascii=False),
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def recorded(path: str | os.PathLike | None = None) -> dict[str, Verdict]:
    """The verdicts recorded so far, {claim: Verdict}; empty if none (or the file is unreadable)."""
    path = Path(path) if path is not None else results_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {k: _verdict(v["claim"], v["answer"], v["evidence"]) for k, v in raw.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def table(verdicts: dict[str, Verdict], width: int = 110) -> str:
    """The six claims, each with its answer, the lesson that measured it and the numbers behind it."""
    import textwrap

    if not isinstance(verdicts, Mapping):
        raise TypeError(f"verdicts must be a dict {{claim: Verdict}}, as claims.recorded() returns, "
                        f"got {type(verdicts).__name__}")
    lines = []
    for claim, text in CLAIMS.items():
        v = verdicts.get(claim)
        answer = v.answer if v else f"not measured yet: run lesson {LESSONS[claim]}"
        lines.append(f"{claim} (lesson {LESSONS[claim]}) {text}\n     → {answer}")
        if v:
            lines.append(textwrap.fill(v.evidence, width, initial_indent=" " * 7, subsequent_indent=" " * 7))
    return "\n".join(lines)
