#!/usr/bin/env python3
"""Record golden Sokoban fixtures from the reference package gym-sokoban 0.0.6.

The Rust Sokoban of crates/gigpo-env must follow gym-sokoban 0.0.6's rules exactly. This script
plays fixed rooms and action sequences in that package and writes what it observed to
crates/gigpo-env/tests/fixtures/sokoban_*.json; the Rust tests (tests/sokoban_fixtures.rs) replay
every fixture and must agree exactly. The fixtures are committed; run this by hand only to
regenerate them:

    python3 -m venv /tmp/venv-sokoban
    /tmp/venv-sokoban/bin/pip install "gym-sokoban==0.0.6" "gym==0.26.2" "numpy<2" "setuptools<81"
    /tmp/venv-sokoban/bin/python python/make_sokoban_fixtures.py

(gym 0.26 needs numpy < 2; gym-sokoban imports pkg_resources, which setuptools 81 removed.)

Files written:
- sokoban_rules.json: hand-made rooms covering pushes onto and off targets, pushes into walls
  and boxes, walking into walls, the final +10, invalid actions and the step limit.
- sokoban_generated.json: rooms made by gym-sokoban's own generator (seeded), played with
  seeded random actions.
- sokoban_reverse_play.json: gym-sokoban's reverse-play search run on rooms from its topology
  and placement steps: the solved room given to it, and the room and score it kept.

Mapping of gym-sokoban to gigpo:
- Actions: gigpo's up/down/left/right are gym-sokoban's push actions 1-4 ("push up" ...);
  an invalid action (output that names no action) is gym-sokoban's action 0 ("no operation"):
  the room does not change, the step costs -0.1 and counts toward the limit.
- Rewards: gym-sokoban's penalty_for_step -0.1, reward_box_on_target +1,
  penalty_box_off_target -1, reward_finished +10 are gigpo's constants.
- Step limit: gym-sokoban's max_steps ends the episode with done=True when num_env_steps reaches
  it; gigpo's max_steps (default 15) is the same count, reported as truncated=True (or as
  terminated=True, won=True when that step solved the room). gym-sokoban's single `done` flag is
  recorded alongside.
- Observation: gym-sokoban renders images; the fixtures hold gigpo's text grid of the room
  state (wall #, floor _, target O, box X, box on target √, player P, player on target S).
- Episode start: gym-sokoban's reset() assumes a generated room, which never starts with a box
  on a target, and sets its counter of boxes on targets to 0. For fixed rooms this script sets
  that counter to the room's real count, which is what a reset of such a room means.
"""

import json
import os
import random
import sys

import numpy as np
from gym_sokoban.envs import room_utils
from gym_sokoban.envs.sokoban_env import SokobanEnv

OUT_DIR = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "crates", "gigpo-env", "tests", "fixtures"
)

# gym-sokoban room codes: 0 wall, 1 floor, 2 target, 3 box on target, 4 box, 5 player.
SYMBOLS = {0: "#", 1: "_", 2: "O", 3: "√", 4: "X", 5: "P"}
GYM_ACTION = {"up": 1, "down": 2, "left": 3, "right": 4}


def to_gym(text):
    """gigpo grid text -> (room_fixed, room_state) in gym-sokoban's codes."""
    fixed_codes = {"#": 0, "_": 1, "O": 2, "X": 1, "√": 2, "P": 1, "S": 2}
    state_codes = {"#": 0, "_": 1, "O": 2, "X": 4, "√": 3, "P": 5, "S": 5}
    rows = [line.split(" ") for line in text.strip("\n").split("\n")]
    fixed = np.array([[fixed_codes[c] for c in row] for row in rows], dtype=int)
    state = np.array([[state_codes[c] for c in row] for row in rows], dtype=int)
    return fixed, state


def to_text(fixed, state):
    """gym-sokoban's room -> gigpo grid text."""
    lines = []
    for i in range(state.shape[0]):
        cells = []
        for j in range(state.shape[1]):
            code = int(state[i, j])
            on_target = fixed[i, j] == 2
            if code == 5 and on_target:
                cells.append("S")
            elif code in (3, 4):
                # A box is on a target when its cell is one. (gym-sokoban's generator relabels
                # every box 4 after reverse play, even one it left on a target.)
                cells.append("√" if on_target else "X")
            else:
                cells.append(SYMBOLS[code])
        lines.append(" ".join(cells))
    return "\n".join(lines)


def play(name, room_text, actions, max_steps):
    """Plays `actions` (action words, or None for an invalid action) from `room_text`."""
    fixed, state = to_gym(room_text)
    num_boxes = int(np.sum((state == 3) | (state == 4)))
    env = SokobanEnv(dim_room=fixed.shape, max_steps=max_steps, num_boxes=num_boxes, reset=False)
    env.room_fixed = fixed
    env.room_state = state
    env.player_position = np.argwhere(state == 5)[0]
    env.num_env_steps = 0
    env.reward_last = 0
    env.boxes_on_target = int(np.sum(state == 3))
    steps = []
    for word in actions:
        gym_action = 0 if word is None else GYM_ACTION[word]
        _, reward, done, _ = env.step(gym_action, observation_mode="tiny_rgb_array")
        won = bool(env._check_if_all_boxes_on_target())
        steps.append(
            {
                "action": "<action>jump</action>" if word is None else f"<action>{word}</action>",
                "gym_action": gym_action,
                "reward": float(reward),
                "done": bool(done),
                "terminated": won,
                "truncated": bool(done) and not won,
                "won": won,
                "observation": to_text(env.room_fixed, env.room_state),
            }
        )
        if done:
            break
    return {"name": name, "max_steps": max_steps, "room": room_text, "steps": steps}


def room(*rows):
    return "\n".join(rows)


RULE_CASES = [
    (
        "push_onto_target_wins",
        room("# # # # # #", "# _ _ _ _ #", "# P X _ O #", "# _ _ _ _ #", "# # # # # #"),
        ["right", "right"],
        15,
    ),
    (
        "walk_around_then_push_up_onto_target",
        room(
            "# # # # # #",
            "# _ _ O _ #",
            "# _ X _ _ #",
            "# _ P _ _ #",
            "# _ _ _ _ #",
            "# # # # # #",
        ),
        ["right", "up", "down", "left", "up", "left", "up", "right"],
        15,
    ),
    (
        "push_off_target_and_back",
        room("# # # # # # #", "# P √ _ _ _ #", "# _ _ _ X O #", "# _ _ _ _ _ #", "# # # # # # #"),
        ["right", "down", "down", "right", "right", "right", "up", "up", "left", "left", "down", "right"],
        30,
    ),
    (
        "push_into_wall_and_walk_into_wall",
        room("# # # # # #", "# X P _ O #", "# _ _ _ _ #", "# # # # # #"),
        ["left", "left", "up", "right", "right", "right", "down", "down"],
        15,
    ),
    (
        "push_into_box",
        room("# # # # # # #", "# P X X _ O #", "# _ _ _ _ O #", "# # # # # # #"),
        ["right", "right", "down", "right", "right", "up", "right"],
        15,
    ),
    (
        "box_from_target_to_target_and_second_box_wins",
        room("# # # # # # #", "# P √ O _ _ #", "# _ _ _ X _ #", "# _ _ _ _ _ #", "# # # # # # #"),
        ["right", "down", "down", "right", "right", "right", "up", "left", "left", "down", "left", "up"],
        30,
    ),
    (
        "player_walks_over_targets",
        room("# # # # # #", "# S _ _ _ #", "# _ X _ _ #", "# _ _ X O #", "# # # # # #"),
        ["right", "right", "left", "left", "down", "down"],
        15,
    ),
    (
        "invalid_actions_cost_a_step",
        room("# # # # # #", "# P X O _ #", "# _ _ _ _ #", "# # # # # #"),
        [None, "down", None, "up", "right"],
        15,
    ),
    (
        "step_limit_truncates",
        room("# # # # # #", "# P _ _ _ #", "# _ X O _ #", "# _ _ _ _ #", "# # # # # #"),
        ["right", "left", "right", "left", "right", "left"],
        3,
    ),
    (
        "step_limit_with_invalid_actions",
        room("# # # # # #", "# P _ _ _ #", "# _ X O _ #", "# _ _ _ _ #", "# # # # # #"),
        [None, None, None, None],
        2,
    ),
    (
        "win_on_the_last_allowed_step",
        room("# # # # # #", "# _ _ _ _ #", "# P X _ O #", "# # # # # #"),
        ["right", "right"],
        2,
    ),
    (
        "push_off_target_then_limit",
        room("# # # # # # #", "# _ P √ _ X #", "# _ _ _ _ O #", "# # # # # # #"),
        ["right", "left", "left", "down", "right", "right"],
        5,
    ),
]


def rule_fixtures():
    return [play(name, text, actions, limit) for name, text, actions, limit in RULE_CASES]


def generated_fixtures():
    """Rooms from gym-sokoban's generator, played with random actions."""
    cases = []
    settings = [((6, 6), 1, 15, 12), ((7, 7), 2, 25, 6), ((8, 8), 2, 25, 4)]
    for dim, boxes, limit, count in settings:
        for k in range(count):
            seed = 1000 * dim[0] + k
            random.seed(seed)
            np.random.seed(seed)
            while True:
                try:
                    fixed, state, _ = room_utils.generate_room(
                        dim=dim, num_steps=int(1.7 * (dim[0] + dim[1])), num_boxes=boxes
                    )
                    break
                except (RuntimeError, RuntimeWarning):
                    continue
            text = to_text(fixed.astype(int), state.astype(int))
            rng = random.Random(seed)
            words = ["up", "down", "left", "right", None]
            actions = [rng.choice(words) for _ in range(limit + 5)]
            cases.append(play(f"gym_generated_{dim[0]}x{dim[1]}_{boxes}_{k}", text, actions, limit))
    return cases


def reverse_play_fixtures():
    """gym-sokoban's reverse play on rooms from its own topology and placement steps."""
    cases = []
    settings = [((6, 6), 1, 16), ((7, 7), 2, 6), ((8, 8), 2, 3), ((10, 10), 3, 3), ((10, 10), 4, 4)]
    for dim, boxes, count in settings:
        made = 0
        seed = 500 * dim[0]
        while made < count:
            seed += 1
            random.seed(seed)
            np.random.seed(seed)
            topology = room_utils.room_topology_generation(
                dim, 0.35, int(1.7 * (dim[0] + dim[1]))
            )
            try:
                placed = room_utils.place_boxes_and_player(
                    topology, num_boxes=boxes, second_player=False
                )
            except RuntimeError:
                continue
            structure = np.copy(placed)
            structure[structure == 5] = 1
            state = placed.copy()
            state[state == 2] = 4
            solved_text = to_text(structure, np.where(state == 4, 3, state))
            best, score, _ = room_utils.reverse_playing(state, structure)
            best = best.copy()
            best[best == 3] = 4
            cases.append(
                {
                    "name": f"reverse_{dim[0]}x{dim[1]}_{boxes}_{seed}",
                    "solved": solved_text,
                    "best": to_text(structure, best),
                    "score": int(score),
                    "explored": len(room_utils.explored_states),
                }
            )
            made += 1
    return cases


def write(name, kind, cases):
    path = os.path.join(OUT_DIR, name)
    doc = {"source": "gym-sokoban 0.0.6", "kind": kind, "cases": cases}
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    print(f"wrote {path}: {len(cases)} cases", file=sys.stderr)


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    write("sokoban_rules.json", "episodes", rule_fixtures())
    write("sokoban_generated.json", "episodes", generated_fixtures())
    write("sokoban_reverse_play.json", "reverse_play", reverse_play_fixtures())


if __name__ == "__main__":
    main()
