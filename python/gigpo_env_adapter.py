"""Serve a Gymnasium-style environment to the gigpo trainer.

Two ways, one file:

* Standard input/output (no dependencies but the Python standard library): the trainer starts
  this program itself with ``endpoint = "cmd:python gigpo_env_adapter.py ..."``. Messages are
  JSON objects, one per line, each with an ``id`` naming its session; many sessions share one
  process. See docs/remote-environments.md for the protocol.
* OpenEnv over WebSocket (needs ``pip install openenv-core``): ``--openenv --port 8000`` serves
  ``/ws``, ``/health``, ``/schema`` and ``/metadata`` with the ``openenv-core`` server, and the
  trainer connects with ``endpoint = "openenv+ws://127.0.0.1:8000"``.

The wrapped environment follows Gymnasium: ``reset(seed=...)`` returns ``obs`` or
``(obs, info)``; ``step(action)`` returns ``(obs, reward, terminated, truncated, info)`` or the
older ``(obs, reward, done, info)``. Observations should be text; other observations are shown
through ``to_text`` (default: ``str(obs)``) or the environment's ``render()`` output.

Each reply's observation carries the fields the trainer reads by default: ``text``, ``anchor``
(``info["anchor"]``, else the raw observation when it is not text, else absent so the text is the
anchor), ``won`` (``info["won"]`` or ``info["is_success"]``), ``action_valid``
(``info["action_valid"]``, default true), ``admissible_actions`` and ``truncated``.

Python use::

    from gigpo_env_adapter import Adapter, serve_stdio
    adapter = Adapter(make_env=lambda: MyEnv(), parse_action=my_parser, max_steps=30)
    serve_stdio(adapter)

Command line (a registered Gymnasium environment, or ``module:factory``)::

    python gigpo_env_adapter.py --gym FrozenLake-v1 --gym-kwargs '{"is_slippery": false}' \\
        --text render --actions left,down,right,up --max-steps 20
    python gigpo_env_adapter.py my_package.envs:make_env --max-steps 30
    python gigpo_env_adapter.py my_package.envs:make_env --openenv --port 8000
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import sys
import threading
import traceback
from typing import Any, Callable, Dict, IO, List, Optional

MAX_MESSAGE_BYTES = 16 << 20
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ACTION_TAG = re.compile(r"<action>(.*?)</action>", re.DOTALL | re.IGNORECASE)


class InvalidAction(Exception):
    """Raised by a ``parse_action`` function for text that names no action."""


def action_from_tags(text: str) -> str:
    """The content of the last ``<action>…</action>`` in ``text`` (else the whole text), stripped."""
    found = _ACTION_TAG.findall(text)
    return (found[-1] if found else text).strip()


def discrete_actions(names: List[str]) -> Callable[[str], int]:
    """A parser mapping ``<action>name</action>`` (or a bare index) to an index in ``names``."""
    lookup = {name.strip().lower(): i for i, name in enumerate(names)}

    def parse(text: str) -> int:
        word = action_from_tags(text).lower()
        if word in lookup:
            return lookup[word]
        if word.isdigit() and int(word) < len(names):
            return int(word)
        raise InvalidAction(f"{word!r} is not one of {', '.join(names)}")

    return parse


class Adapter:
    """How to turn one Gymnasium-style environment into protocol observations.

    Args:
        make_env: creates one environment instance (called once per session).
        to_text: observation -> text shown to the model. Default: the observation itself when it
            is a string, ``obs["text"]`` for dicts that have it, else ``str(obs)``.
        render_text: use ``env.render()`` (ANSI colours removed) as the text instead.
        parse_action: model text -> action for ``env.step``; raise :class:`InvalidAction` (or
            return None) for text that names no action. Default: pass the text through.
        anchor: ``(obs, info) -> key`` for the canonical state key. Default described above.
        admissible_actions: ``(obs, info) -> list of str``. Default: ``info["admissible_actions"]``.
        max_steps: cut episodes off (``truncated``) after this many steps.
        invalid_action_reward: reward of a step whose text named no action (the state is kept).
        won_reward: if set, an episode that terminates with a step reward >= this is won.
        name, description: metadata; the description is the agent's default instructions.
    """

    def __init__(
        self,
        make_env: Callable[[], Any],
        *,
        to_text: Optional[Callable[[Any], str]] = None,
        render_text: bool = False,
        parse_action: Optional[Callable[[str], Any]] = None,
        anchor: Optional[Callable[[Any, dict], Any]] = None,
        admissible_actions: Optional[Callable[[Any, dict], List[str]]] = None,
        max_steps: Optional[int] = None,
        invalid_action_reward: float = 0.0,
        won_reward: Optional[float] = None,
        name: str = "gym",
        description: str = "",
    ) -> None:
        self.make_env = make_env
        self.to_text = to_text
        self.render_text = render_text
        self.parse_action = parse_action
        self.anchor = anchor
        self.admissible_actions = admissible_actions
        self.max_steps = max_steps
        self.invalid_action_reward = float(invalid_action_reward)
        self.won_reward = won_reward
        self.name = name
        self.description = description

    def metadata(self) -> Dict[str, Any]:
        return {"name": self.name, "description": self.description}


class Session:
    """One environment instance and its running episode."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.env = adapter.make_env()
        self.steps = 0
        self.episodes = 0
        self.last: Optional[Dict[str, Any]] = None

    def reset(self, seed: Optional[int]) -> Dict[str, Any]:
        try:
            result = self.env.reset(seed=seed)
        except TypeError:  # environments older than the `seed` keyword
            if seed is not None and hasattr(self.env, "seed"):
                self.env.seed(seed)
            result = self.env.reset()
        obs, info = result if _is_pair(result) else (result, {})
        self.steps = 0
        self.episodes += 1
        self.last = self._observation(obs, info or {}, valid=True, truncated=False)
        return {"observation": self.last, "reward": None, "done": False}

    def step(self, text: str) -> Dict[str, Any]:
        if self.last is None:
            raise RuntimeError("step called before reset")
        try:
            action = self.adapter.parse_action(text) if self.adapter.parse_action else text
        except InvalidAction:
            action = None
        if action is None:
            return self._invalid_step()
        result = self.env.step(action)
        if len(result) == 5:
            obs, reward, terminated, truncated, info = result
        elif len(result) == 4:
            obs, reward, done, info = result
            truncated = bool((info or {}).get("TimeLimit.truncated", False))
            terminated = bool(done) and not truncated
        else:
            raise ValueError(f"step returned {len(result)} values; expected 4 or 5")
        info = info or {}
        self.steps += 1
        reward = _finite(reward)
        truncated = bool(truncated) or self._out_of_steps(bool(terminated))
        won = self._won(info, reward, bool(terminated))
        self.last = self._observation(obs, info, valid=info.get("action_valid", True), truncated=truncated)
        self.last["won"] = won
        return {"observation": self.last, "reward": reward, "done": bool(terminated) or truncated}

    def state(self) -> Dict[str, Any]:
        return {"episode_id": str(self.episodes) if self.episodes else None, "step_count": self.steps}

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if callable(close):
            close()

    def _invalid_step(self) -> Dict[str, Any]:
        self.steps += 1
        observation = dict(self.last)
        observation["action_valid"] = False
        observation["won"] = False
        observation["truncated"] = self._out_of_steps(False)
        self.last = observation
        return {
            "observation": observation,
            "reward": self.adapter.invalid_action_reward,
            "done": observation["truncated"],
        }

    def _out_of_steps(self, terminated: bool) -> bool:
        limit = self.adapter.max_steps
        return not terminated and limit is not None and self.steps >= limit

    def _won(self, info: dict, reward: float, terminated: bool) -> bool:
        if "won" in info:
            return bool(info["won"])
        if "is_success" in info:
            return bool(info["is_success"])
        limit = self.adapter.won_reward
        return terminated and limit is not None and reward >= limit

    def _observation(self, obs: Any, info: dict, valid: Any, truncated: bool) -> Dict[str, Any]:
        a = self.adapter
        if a.render_text:
            text = _ANSI.sub("", str(self.env.render()))
        elif a.to_text is not None:
            text = a.to_text(obs)
        elif isinstance(obs, str):
            text = obs
        elif isinstance(obs, dict) and isinstance(obs.get("text"), str):
            text = obs["text"]
        else:
            text = str(obs)
        if a.anchor is not None:
            anchor = a.anchor(obs, info)
        elif "anchor" in info:
            anchor = info["anchor"]
        elif not isinstance(obs, str) and not (isinstance(obs, dict) and "text" in obs):
            anchor = _plain(obs)
        else:
            anchor = None
        if a.admissible_actions is not None:
            admissible = a.admissible_actions(obs, info)
        else:
            admissible = info.get("admissible_actions")
        return {
            "text": str(text),
            "anchor": None if anchor is None else (anchor if isinstance(anchor, str) else json.dumps(_plain(anchor), sort_keys=True)),
            "won": False,
            "action_valid": bool(valid),
            "admissible_actions": None if admissible is None else [str(x) for x in admissible],
            "truncated": bool(truncated),
        }


def _is_pair(result: Any) -> bool:
    return isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)


def _finite(reward: Any) -> float:
    value = float(reward)
    if not math.isfinite(value):
        raise ValueError(f"reward {value} is not a finite number")
    return value


def _plain(value: Any) -> Any:
    """Numbers, strings, lists and dicts only (numpy scalars and arrays included)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# ---------------------------------------------------------------------------------------------
# Standard input/output
# ---------------------------------------------------------------------------------------------


def _error(code: str, message: str) -> Dict[str, Any]:
    return {"type": "error", "data": {"message": message, "code": code}}


def _answer(adapter: Adapter, sessions: Dict[str, Session], msg: Any, action_field: str) -> Optional[Dict[str, Any]]:
    """The reply to one decoded message (without its id), or None for ``close``."""
    kind = msg.get("type")
    data = msg.get("data") or {}
    sid = msg["id"]
    if kind == "close":
        session = sessions.pop(sid, None)
        if session is not None:
            session.close()
        return None
    if kind == "health":
        return {"type": "health", "data": {"status": "healthy"}}
    if kind == "metadata":
        return {"type": "metadata", "data": adapter.metadata()}
    if kind not in ("reset", "step", "state"):
        return _error("UNKNOWN_TYPE", f"Unknown message type: {kind}")
    if not isinstance(data, dict):
        return _error("VALIDATION_ERROR", "`data` must be an object")
    session = sessions.get(sid)
    if session is None:
        try:
            session = sessions[sid] = Session(adapter)
        except Exception as e:  # the factory failed
            traceback.print_exc(file=sys.stderr)
            return _error("FACTORY_ERROR", f"{type(e).__name__}: {e}")
    try:
        if kind == "reset":
            seed = data.get("seed")
            if seed is not None and (not isinstance(seed, int) or seed < 0):
                return _error("VALIDATION_ERROR", "`seed` must be a non-negative integer")
            return {"type": "observation", "data": session.reset(seed)}
        if kind == "step":
            text = data.get(action_field)
            if not isinstance(text, str):
                return _error("VALIDATION_ERROR", f"step `data` needs a string field `{action_field}`")
            return {"type": "observation", "data": session.step(text)}
        return {"type": "state", "data": session.state()}
    except Exception as e:  # the environment raised
        traceback.print_exc(file=sys.stderr)
        return _error("EXECUTION_ERROR", f"{type(e).__name__}: {e}")


def serve_stdio(
    adapter: Adapter,
    stdin: Optional[IO[bytes]] = None,
    stdout: Optional[IO[bytes]] = None,
    action_field: str = "action",
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> None:
    """Answer protocol messages on standard input/output until standard input closes.

    Whatever the environment prints goes to standard error: ``sys.stdout`` is redirected there so
    stray ``print`` calls cannot corrupt the protocol stream.
    """
    source = stdin if stdin is not None else sys.stdin.buffer
    sink = stdout if stdout is not None else sys.stdout.buffer
    sys.stdout = sys.stderr
    sessions: Dict[str, Session] = {}
    while True:
        raw = source.readline(max_message_bytes + 1)
        if not raw:
            break
        if len(raw) > max_message_bytes and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = source.readline(max_message_bytes + 1)
            reply = {"id": None, **_error("VALIDATION_ERROR", f"message over {max_message_bytes} bytes")}
        else:
            reply = _handle_line(adapter, sessions, raw, action_field)
        if reply is None:
            continue
        try:
            line = json.dumps(reply, allow_nan=False, default=_plain)
        except ValueError as e:
            line = json.dumps({"id": reply.get("id"), **_error("EXECUTION_ERROR", f"reply is not JSON: {e}")})
        sink.write(line.encode("utf-8") + b"\n")
        sink.flush()
    for session in sessions.values():
        session.close()


def _handle_line(adapter: Adapter, sessions: Dict[str, Session], raw: bytes, action_field: str) -> Optional[Dict[str, Any]]:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        msg = json.loads(text)
    except ValueError as e:
        return {"id": None, **_error("INVALID_JSON", f"Invalid JSON: {e}")}
    if not isinstance(msg, dict) or not isinstance(msg.get("id"), str):
        return {"id": None, **_error("VALIDATION_ERROR", "every message needs a string `id`")}
    reply = _answer(adapter, sessions, msg, action_field)
    return None if reply is None else {"id": msg["id"], **reply}


# ---------------------------------------------------------------------------------------------
# OpenEnv (optional: needs openenv-core)
# ---------------------------------------------------------------------------------------------


def openenv_app(adapter: Adapter, max_concurrent_envs: int = 256) -> Any:
    """A FastAPI app serving ``adapter`` with the ``openenv-core`` server (``/ws`` and friends).

    Run it with uvicorn, e.g. ``uvicorn.run(openenv_app(adapter), host="127.0.0.1", port=8000)``.
    """
    from openenv.core.env_server.http_server import create_app
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import Action, EnvironmentMetadata, Observation, State

    class TextAction(Action):
        action: str

    class TextObservation(Observation):
        text: str = ""
        anchor: Optional[str] = None
        won: bool = False
        action_valid: bool = True
        admissible_actions: Optional[List[str]] = None
        truncated: bool = False

    class GymEnvironment(Environment):
        SUPPORTS_CONCURRENT_SESSIONS = True

        def __init__(self) -> None:
            super().__init__()
            self.session = Session(adapter)

        def _wrap(self, reply: Dict[str, Any]) -> TextObservation:
            return TextObservation(**reply["observation"], reward=reply["reward"], done=reply["done"])

        def reset(self, seed: Optional[int] = None, episode_id: Optional[str] = None, **kwargs: Any) -> TextObservation:
            return self._wrap(self.session.reset(seed))

        def step(self, action: TextAction, timeout_s: Optional[float] = None, **kwargs: Any) -> TextObservation:
            return self._wrap(self.session.step(action.action))

        @property
        def state(self) -> State:
            return State(**self.session.state())

        def get_metadata(self) -> EnvironmentMetadata:
            return EnvironmentMetadata(**adapter.metadata(), version="1")

        def close(self) -> None:
            self.session.close()

    return create_app(
        GymEnvironment, TextAction, TextObservation, env_name=adapter.name, max_concurrent_envs=max_concurrent_envs
    )


def serve_openenv(adapter: Adapter, host: str = "127.0.0.1", port: int = 8000, max_concurrent_envs: int = 256, port_file: Optional[str] = None) -> None:
    """Serve ``adapter`` over OpenEnv with uvicorn on ``host:port`` (port 0: any free port).

    With ``port_file``, the port actually bound is written there once the server listens (``-``:
    a line ``PORT <n>`` on standard output).
    """
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    if port_file == "-":
        print(f"PORT {sock.getsockname()[1]}", file=sys.__stdout__, flush=True)
    elif port_file:
        tmp = port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(sock.getsockname()[1]))
        os.replace(tmp, port_file)
    config = uvicorn.Config(openenv_app(adapter, max_concurrent_envs), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


def exit_when_stdin_closes() -> None:
    """Exit the process when standard input reaches its end (the parent went away)."""

    def wait() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    threading.Thread(target=wait, daemon=True).start()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _factory(args: argparse.Namespace) -> Callable[[], Any]:
    kwargs = json.loads(args.gym_kwargs) if args.gym_kwargs else {}
    if args.gym:
        import gymnasium

        if args.text == "render":
            kwargs.setdefault("render_mode", "ansi")
        return lambda: gymnasium.make(args.gym, **kwargs)
    if not args.factory or ":" not in args.factory:
        raise SystemExit("name an environment: `module:factory` or --gym ID")
    module, _, attr = args.factory.partition(":")
    sys.path.insert(0, os.getcwd())
    factory = getattr(importlib.import_module(module), attr)
    return lambda: factory(**kwargs)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description="Serve a Gymnasium-style environment to the gigpo trainer.")
    p.add_argument("factory", nargs="?", help="module:callable returning a new environment")
    p.add_argument("--gym", help="a registered Gymnasium environment id, e.g. FrozenLake-v1")
    p.add_argument("--gym-kwargs", help="JSON object of keyword arguments for the factory / gymnasium.make")
    p.add_argument("--text", choices=["obs", "render"], default="obs", help="text from the observation or from render()")
    p.add_argument("--actions", help="comma-separated names of a discrete action space, in index order")
    p.add_argument("--max-steps", type=int, help="truncate episodes after this many steps")
    p.add_argument("--invalid-action-reward", type=float, default=0.0)
    p.add_argument("--won-reward", type=float, help="terminating with a step reward >= this is a win")
    p.add_argument("--name", default=None)
    p.add_argument("--description", default="")
    p.add_argument("--action-field", default="action")
    p.add_argument("--openenv", action="store_true", help="serve over OpenEnv (needs openenv-core) instead of stdio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--port-file", help="write the bound port to this file (useful with --port 0); `-`: print `PORT <n>`")
    p.add_argument("--max-sessions", type=int, default=256)
    p.add_argument("--exit-on-stdin-eof", action="store_true", help="with --openenv: exit when standard input closes")
    args = p.parse_args(argv)
    adapter = Adapter(
        _factory(args),
        render_text=args.text == "render",
        parse_action=discrete_actions(args.actions.split(",")) if args.actions else None,
        max_steps=args.max_steps,
        invalid_action_reward=args.invalid_action_reward,
        won_reward=args.won_reward,
        name=args.name or args.gym or args.factory or "gym",
        description=args.description,
    )
    if args.openenv:
        if args.exit_on_stdin_eof:
            exit_when_stdin_closes()
        serve_openenv(adapter, args.host, args.port, args.max_sessions, args.port_file)
    else:
        serve_stdio(adapter, action_field=args.action_field)


if __name__ == "__main__":
    main()
