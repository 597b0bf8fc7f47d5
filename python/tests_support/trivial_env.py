"""The cheapest possible environment, for the transport benchmark (crates/gigpo-env/benches/remote.rs).

Served by gigpo_env_adapter over stdio (`python gigpo_env_adapter.py trivial_env:make_env`) or over
OpenEnv (`... --openenv`). Every step returns the same short text; episodes never end on their own.
"""


class Trivial:
    def reset(self, seed=None):
        return "ready", {}

    def step(self, action):
        return "ok", 0.0, False, False, {}


def make_env():
    return Trivial()
