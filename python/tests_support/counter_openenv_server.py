"""A small OpenEnv environment served by the real openenv-core server, for the integration tests.

Run by the Rust tests (crates/gigpo-env/tests/remote_openenv.rs); by hand:
    python counter_openenv_server.py            # prints "PORT <n>" once listening on 127.0.0.1

The agent moves a counter from 0 to a goal (3 + seed % 3) with <action>inc</action> and
<action>dec</action>. Each step costs -0.1; reaching the goal gives +1 and ends the episode (won).
Other text is an invalid action (the counter stays, action_valid = false). Test hooks:
`boom` raises inside step (an OpenEnv error reply), `sleep:S` sleeps S seconds first.

Observations carry the default gigpo field names (text, anchor, won, action_valid,
admissible_actions) and, for the custom-name test, the same facts under other names
(prompt, state_key, success, valid).
The process exits when its standard input closes, so a test run never leaves it behind.
"""

import os
import socket
import sys
import threading
import time
from typing import List, Optional

from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, EnvironmentMetadata, Observation, State
import uvicorn


class CounterAction(Action):
    action: str


class CounterObservation(Observation):
    text: str
    anchor: str
    won: bool = False
    action_valid: bool = True
    admissible_actions: Optional[List[str]] = None
    prompt: str = ""
    state_key: str = ""
    success: bool = False
    valid: bool = True


class CounterEnv(Environment):
    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self) -> None:
        super().__init__()
        self.pos = 0
        self.goal = 3
        self.steps = 0
        self.episode: Optional[str] = None

    def _obs(self, reward, done, won=False, valid=True) -> CounterObservation:
        text = f"counter at {self.pos}, goal {self.goal}"
        anchor = f"pos={self.pos}/goal={self.goal}"
        return CounterObservation(
            text=text, anchor=anchor, won=won, action_valid=valid,
            admissible_actions=["inc", "dec"],
            prompt="P: " + text, state_key="K: " + anchor, success=won, valid=valid,
            reward=reward, done=done,
        )

    def reset(self, seed: Optional[int] = None, episode_id: Optional[str] = None, **kwargs) -> CounterObservation:
        self.goal = 3 + (seed or 0) % 3
        self.pos = 0
        self.steps = 0
        self.episode = episode_id or f"seed-{seed}"
        return self._obs(None, False)

    def step(self, action: CounterAction, timeout_s: Optional[float] = None, **kwargs) -> CounterObservation:
        text = action.action
        if text.startswith("sleep:"):
            time.sleep(float(text.split(":", 1)[1]))
            text = "inc"
        if text == "boom":
            raise RuntimeError("boom requested by the test")
        word = text.split("<action>")[-1].split("</action>")[0].strip()
        self.steps += 1
        if word == "inc":
            self.pos += 1
        elif word == "dec":
            self.pos = max(0, self.pos - 1)
        else:
            return self._obs(-0.1, False, valid=False)
        if self.pos == self.goal:
            return self._obs(1.0, True, won=True)
        return self._obs(-0.1, False)

    @property
    def state(self) -> State:
        return State(episode_id=self.episode, step_count=self.steps)

    def get_metadata(self) -> EnvironmentMetadata:
        return EnvironmentMetadata(name="counter", description="Count up to the goal with inc/dec.", version="1")


def main() -> None:
    def exit_on_eof() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    threading.Thread(target=exit_on_eof, daemon=True).start()
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    app = create_app(CounterEnv, CounterAction, CounterObservation, env_name="counter", max_concurrent_envs=64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
