"""The table and summary.json of bench/learning.sh and bench/ablations.sh (standard library only).

Usage: python3 bench/lib/summarize.py OUT "SEEDS" NAME...

Reads OUT/NAME-seedSEED/metrics.jsonl for every name and seed: the first evaluation (iteration
0, after the warm start) and the last one (the end of the budget). Prints a Markdown table of
held-out success and return, greedy and sampled, mean ± std over seeds (sample standard
deviation; 0 for one seed), with the random policy and the solver on the same levels, and
writes OUT/summary.json:

    {"NAME": {"mean": greedy success at the end (mean over seeds), "std": ..., "per_seed": [...],
              "sampled": {"mean", "std", "per_seed"}, "greedy_return": {...},
              "sampled_return": {...}, "start": {...}, "env_steps": {...}, "seeds": [...]},
     ...,
     "random": the random policy's success on the same levels,
     "optimal": the solver's success within the step limit,
     "setting": the lines of OUT/setting.txt}
"""

import json
import math
import statistics
import sys

GREEDY = "eval/greedy_success_rate"
SAMPLED = "eval/success_rate"
GREEDY_RETURN = "eval/greedy_mean_return"
SAMPLED_RETURN = "eval/mean_return"
RANDOM = "eval/random_success_rate"
OPTIMAL = "eval/optimal_success_rate"


def evaluations(path):
    """The records of metrics.jsonl that hold an evaluation, in order."""
    try:
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        sys.exit(f"{path}: missing (has this run been trained?)")
    evals = [r for r in records if SAMPLED in r]
    if not evals:
        sys.exit(f"{path}: no evaluation record")
    return evals


def spread(values):
    """Mean, sample standard deviation and the values; None where a value is missing."""
    if any(v is None for v in values):
        return {"mean": None, "std": None, "per_seed": values}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "std": std, "per_seed": values}


def summarize_run(out, name, seeds):
    """The figures of one name over its seeds."""
    firsts, lasts = [], []
    for seed in seeds:
        ev = evaluations(f"{out}/{name}-seed{seed}/metrics.jsonl")
        firsts.append(ev[0])
        lasts.append(ev[-1])
    column = lambda records, key: [r.get(key) for r in records]
    greedy = spread(column(lasts, GREEDY))
    return {
        **greedy,
        "sampled": spread(column(lasts, SAMPLED)),
        "greedy_return": spread(column(lasts, GREEDY_RETURN)),
        "sampled_return": spread(column(lasts, SAMPLED_RETURN)),
        "start": {
            "greedy": spread(column(firsts, GREEDY)),
            "sampled": spread(column(firsts, SAMPLED)),
        },
        "env_steps": spread(column(lasts, "env_steps")),
        "seeds": [int(s) for s in seeds],
        "baselines": {"random": column(lasts, RANDOM), "optimal": column(lasts, OPTIMAL)},
    }


def cell(s, digits=3):
    if s["mean"] is None:
        return "n/a"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


# Two-sided 95 % quantiles of Student's t by degrees of freedom (1 to 30; the normal's beyond).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def difference(a, b):
    """Mean of a minus mean of b with a 95 % Welch interval (df rounded down); None when
    either side has fewer than two values or a value is missing."""
    if len(a) < 2 or len(b) < 2 or None in a or None in b:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.mean(a) - statistics.mean(b)
    if va + vb == 0:
        return {"mean": diff, "low": diff, "high": diff}
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = T975[int(df) - 1] if int(df) <= len(T975) else 1.960
    half = t * math.sqrt(va + vb)
    return {"mean": diff, "low": diff - half, "high": diff + half}


def mean_of(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def main():
    out, seeds, names = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
    runs = {name: summarize_run(out, name, seeds) for name in names}
    baselines = [run.pop("baselines") for run in runs.values()]
    random = mean_of([v for b in baselines for v in b["random"]])
    optimal = mean_of([v for b in baselines for v in b["optimal"]])
    try:
        with open(f"{out}/setting.txt") as f:
            setting = f.read().splitlines()
    except FileNotFoundError:
        setting = []
    summary = {**runs, "random": random, "optimal": optimal, "setting": setting}
    if "gigpo" in runs and "grpo" in runs:
        summary["gigpo_minus_grpo"] = {
            "greedy": difference(runs["gigpo"]["per_seed"], runs["grpo"]["per_seed"]),
            "sampled": difference(runs["gigpo"]["sampled"]["per_seed"],
                                  runs["grpo"]["sampled"]["per_seed"]),
        }
    with open(f"{out}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")

    print(f"Held-out levels, {len(seeds)} seed(s) ({' '.join(seeds)}); mean ± std over seeds.\n")
    print("| run | greedy success (start → end) | sampled success (start → end) "
          "| greedy return | sampled return | env steps |")
    print("|---|---|---|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {cell(r['start']['greedy'])} → {cell(r)} "
              f"| {cell(r['start']['sampled'])} → {cell(r['sampled'])} "
              f"| {cell(r['greedy_return'], 2)} | {cell(r['sampled_return'], 2)} "
              f"| {r['env_steps']['mean']:.0f} |")
    show = lambda v: "n/a" if v is None or math.isnan(v) else f"{v:.3f}"
    print(f"| random policy | {show(random)} | {show(random)} | | | |")
    print(f"| solver (within the step limit) | {show(optimal)} | {show(optimal)} | | | |")
    seeds_shown = lambda values: " ".join(show(v) for v in values)
    print(f"\nAt the end, seed by seed ({' '.join(seeds)}):\n")
    print("| run | greedy success | sampled success |")
    print("|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {seeds_shown(r['per_seed'])} | {seeds_shown(r['sampled']['per_seed'])} |")
    print()
    for level, d in summary.get("gigpo_minus_grpo", {}).items():
        if d is not None:
            print(f"GiGPO − GRPO, {level} success at the end: {d['mean']:+.3f} "
                  f"[{d['low']:+.3f}, {d['high']:+.3f}] (95 % Welch interval over seeds)")
    print(f"\ncurves: {out}/curves.png; figures: {out}/summary.json")


if __name__ == "__main__":
    main()
