"""Gymnasium's FrozenLake as a text environment over the stdio protocol, for the integration tests.

Run by crates/gigpo-env/tests/remote_stdio.rs as
    cmd:python frozenlake_text.py
It wraps the real `gymnasium` FrozenLake-v1 (4x4 map, not slippery, 20-step limit) with
gigpo_env_adapter: the text is the grid with the player as P, the anchor is the cell index, the
actions are <action>left|down|right|up</action>, and reaching the goal is a win.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import gymnasium  # noqa: E402

from gigpo_env_adapter import Adapter, discrete_actions, serve_stdio  # noqa: E402

MAP = ["SFFF", "FHFH", "FFFH", "HFFG"]


def make_env():
    return gymnasium.make("FrozenLake-v1", desc=MAP, is_slippery=False)


def to_text(obs) -> str:
    row, col = divmod(int(obs), 4)
    lines = []
    for r, line in enumerate(MAP):
        cells = ["P" if (r, c) == (row, col) else ch for c, ch in enumerate(line)]
        lines.append(" ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    serve_stdio(
        Adapter(
            make_env,
            to_text=to_text,
            parse_action=discrete_actions(["left", "down", "right", "up"]),
            max_steps=20,
            won_reward=1.0,
            name="frozenlake",
            description="Walk from S to G on the frozen lake without falling into a hole H.",
        )
    )
