"""A stdio environment that misbehaves on request, for the fault tests of the stdio transport.

Run by crates/gigpo-env/tests/remote_stdio.rs as `cmd:python misbehaving_env.py [--die-at-start]`.
Served through gigpo_env_adapter. The action text decides what happens:
  crash    -> the process exits with status 3 (after a line on standard error)
  hang     -> the process sleeps for an hour (the client's timeout must fire)
  garbage  -> a line that is not JSON is written straight to the protocol stream
  print    -> the environment prints to stdout (harmless: the adapter sends it to stderr)
  huge     -> the observation text is 2 MB
  anything else -> an ordinary step (reward 0, episode ends after 3 steps)
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gigpo_env_adapter import Adapter, serve_stdio  # noqa: E402


class Misbehaving:
    def __init__(self):
        self.t = 0

    def reset(self, seed=None):
        self.t = 0
        return f"start {seed}", {"anchor": "start"}

    def step(self, action):
        self.t += 1
        if action == "crash":
            sys.stderr.write("misbehaving_env: crashing on purpose\n")
            sys.stderr.flush()
            os._exit(3)
        if action == "hang":
            time.sleep(3600)
        if action == "garbage":
            os.write(1, b"this is not a protocol message\n")
        if action == "print":
            print("hello from inside the environment")
        text = "x" * (2 << 20) if action == "huge" else f"step {self.t}"
        return text, 0.0, self.t >= 3, False, {}


if __name__ == "__main__":
    if "--die-at-start" in sys.argv:
        sys.stderr.write("misbehaving_env: cannot start, missing configuration\n")
        sys.exit(2)
    serve_stdio(Adapter(Misbehaving, name="misbehaving"))
