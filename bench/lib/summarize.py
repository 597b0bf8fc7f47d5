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
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
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
    print(f"\ncurves: {out}/curves.png; figures: {out}/summary.json")


if __name__ == "__main__":
    main()
