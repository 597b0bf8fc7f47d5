#!/usr/bin/env python3
"""Record difflib.SequenceMatcher(None, a, b).ratio() for fixed string pairs.

Writes crates/gigpo-core/tests/fixtures/difflib_ratios.json, which the Rust tests replay to check
that gigpo's similarity ratio equals Python's. Standard library only. Run from the repository root:

    python3 python/make_difflib_fixture.py
"""
import difflib
import json
import random
from pathlib import Path

OUT = Path("crates/gigpo-core/tests/fixtures/difflib_ratios.json")


def pairs():
    fixed = [
        ("", ""), ("a", ""), ("", "b"), ("abcd", "bcde"), ("kitten", "sitting"),
        ("You are in the kitchen.", "You are in the kitchen!"),
        ("# # # #\n# P _ #\n# X O #", "# # # #\n# _ P #\n# X O #"),
        ("héllo wörld", "hello world"), ("ababababab", "babababa"),
        ("private Thread currentThread;", "private volatile Thread currentThread;"),
    ]
    yield from fixed
    rng = random.Random(1234)
    for n in range(60):
        alphabet = "ab" if n % 3 == 0 else "abcde _#\n" if n % 3 == 1 else "abcdefghijklmnopqrstuvwxyz "
        la = rng.choice([0, 1, 5, 20, 80, 199, 200, 250, 400])
        a = "".join(rng.choice(alphabet) for _ in range(la))
        if rng.random() < 0.5:
            b = list(a)
            for _ in range(rng.randint(0, max(1, len(b) // 5))):
                op = rng.random()
                pos = rng.randint(0, len(b))
                if op < 0.4 and b:
                    b[min(pos, len(b) - 1)] = rng.choice(alphabet)
                elif op < 0.7:
                    b.insert(pos, rng.choice(alphabet))
                elif b:
                    del b[min(pos, len(b) - 1)]
            b = "".join(b)
        else:
            lb = rng.choice([0, 3, 50, 210, 300])
            b = "".join(rng.choice(alphabet) for _ in range(lb))
        yield a, b


def main():
    cases = [[a, b, difflib.SequenceMatcher(None, a, b).ratio()] for a, b in pairs()]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(cases, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
