"""How well the verdicts predict whether a run trained, on the grids already run here.

    .venv/bin/python scripts/calibrate_verdict.py [data_root ...]

reads ``<data_root>/07_model_output/runs.parquet`` for each data root (default: the default grid
and the three reproductions; run them first) and prints, per grid and pooled, the share of runs
whose verdict predicted the outcome (healthy ↔ trained, ``gradlab.core.verdict.TRAINED_AT``) for:

- the rule before calibration (one verdict, tripped by the ratio at init *or* at the end, with
  thresholds 0.1 and 10: gradlab ≤ 2026-11);
- the current verdict at init and verdict over training (``VerdictRule()``);
- a sweep of the over-training thresholds, best first, and the agreement of a rule chosen on all
  grids but one, scored on the one left out: how ``VerdictRule`` was chosen, and how much of its
  agreement is fitted.
"""

import itertools
import math
import sys
from pathlib import Path

import pandas as pd

from gradlab.core.verdict import VerdictRule, agreement, judge

DEFAULT_ROOTS = ("data", "data/seed_course", "data/glorot2010", "data/he2015", "data/resnet_depth")
VANISHING = (0.03, 0.1, 0.2, 0.3, 0.5)
EXPLODING = (3.0, 10.0, 30.0, 100.0, 1000.0)
SATURATED = (0.5, 0.7, 0.9)
DEAD = (0.3, 0.5, 0.7)


def before_calibration(run: pd.Series) -> str:
    """The verdict as gradlab computed it before calibration."""
    ratios = [r for r in (run["init_grad_ratio"], run["end_grad_ratio"]) if math.isfinite(r)]
    if run["status"] == "diverged" or any(r > 10 for r in ratios):
        return "exploding"
    if any(r < 0.1 for r in ratios):
        return "vanishing"
    if run["end_saturation"] > 0.5:
        return "saturated"
    if run["end_dead_frac"] > 0.5:
        return "dead"
    return "healthy"


def main(roots: list[str]) -> None:
    grids = {}
    for root in roots:
        path = Path(root) / "07_model_output" / "runs.parquet"
        if not path.exists():
            sys.exit(f"{path} does not exist: run `kedro run` for that environment first")
        runs = pd.read_parquet(path)
        grids[root] = judge(runs[runs["status"] != "failed"])
    grids["pooled"] = pd.concat(grids.values(), ignore_index=True)

    print(f"{'grid':18} {'runs':>5} {'trained':>8} {'before':>7} {'at init':>8} {'training':>9}")
    for name, runs in grids.items():
        before = runs.assign(old=runs.apply(before_calibration, axis=1))
        print(
            f"{name:18} {len(runs):5d} {int(runs['trained'].sum()):8d} "
            f"{agreement(before, 'old'):7.1%} {agreement(runs, 'init_verdict'):8.1%} "
            f"{agreement(runs, 'verdict'):9.1%}"
        )

    pooled = grids["pooled"]
    named = {name: runs for name, runs in grids.items() if name != "pooled"}
    rules = [
        VerdictRule(end_vanishing_ratio=v, end_exploding_ratio=e, saturated_frac=s, dead_frac=d)
        for v, e, s, d in itertools.product(VANISHING, EXPLODING, SATURATED, DEAD)
    ]
    scores = pd.DataFrame(
        [
            {name: agreement(judge(runs, rule), "verdict") for name, runs in grids.items()}
            for rule in rules
        ]
    )
    print("\nover-training rules, best pooled agreement first (worst single grid beside):")
    for i in scores.sort_values("pooled", ascending=False).index[:6]:
        rule = rules[i]
        print(
            f"  vanishing < {rule.end_vanishing_ratio:<4g} "
            f"exploding > {rule.end_exploding_ratio:<5g} saturated > {rule.saturated_frac:<4g} "
            f"dead > {rule.dead_frac:<4g} pooled "
            f"{scores.loc[i, 'pooled']:6.1%}  worst grid {scores.loc[i, list(named)].min():6.1%}"
        )
    # the honest number: a rule chosen on the other grids, scored on the one left out
    print("\nleave one grid out (rule chosen on the others, weighted by runs; scored on it):")
    sizes = pd.Series({name: len(runs) for name, runs in named.items()})
    for held_out in named:
        others = [name for name in named if name != held_out]
        weighted = (scores[others] * sizes[others]).sum(axis=1) / sizes[others].sum()
        best = weighted.idxmax()
        print(
            f"  {held_out:18} chosen rule scores {scores.loc[best, held_out]:6.1%} "
            f"(on the others {weighted[best]:6.1%}): {rules[best]}"
        )
    current = VerdictRule()
    print(f"\ncurrent rule: {current}; {len(pooled)} runs pooled")


if __name__ == "__main__":
    main(sys.argv[1:] or list(DEFAULT_ROOTS))
