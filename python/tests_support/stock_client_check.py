"""Drive a `gigpo env serve` server with the stock OpenEnv client, for the integration tests.

Run by crates/gigpo-env/tests/remote_server.rs as `python stock_client_check.py http://127.0.0.1:PORT`
against a server hosting the tests' `walk` environment (goal 2 + seed % 3, `right` moves on).
Uses openenv-core's GenericEnvClient for episodes and the `websockets` package for malformed
messages; exits non-zero with a message on the first mismatch, prints `OK` at the end.
"""

import asyncio
import json
import sys
import urllib.request

from openenv.core.generic_client import GenericEnvClient
from websockets.asyncio.client import connect


def get(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        assert r.status == 200, (path, r.status)
        return json.loads(r.read())


def check_http(base):
    assert get(base, "/health") == {"status": "healthy"}
    meta = get(base, "/metadata")
    assert meta["name"] == "walk" and meta["description"] == "Walk right to the goal.", meta
    schema = get(base, "/schema")
    assert schema["action"]["required"] == ["action"], schema
    assert "text" in schema["observation"]["properties"], schema


def check_episode(base):
    with GenericEnvClient(base_url=base).sync() as env:
        first = env.reset(seed=1)
        assert first.observation["text"] == "at 0 of 3", first
        assert first.observation["anchor"] == "0/3", first
        assert first.done is False
        bad = env.step({"action": "fly"})
        assert bad.observation["action_valid"] is False and bad.reward == -0.1, bad
        for i in range(3):
            result = env.step({"action": "<action>right</action>"})
        assert result.done is True and result.reward == 1.0, result
        assert result.observation["won"] is True and result.observation["truncated"] is False, result
        state = env.state()
        assert state["step_count"] == 4, state


async def check_malformed(base):
    url = base.replace("http://", "ws://") + "/ws"
    async with connect(url) as ws:
        async def ask(text):
            await ws.send(text)
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

        reply = await ask("{not json")
        assert reply["type"] == "error" and reply["data"]["code"] == "INVALID_JSON", reply
        reply = await ask(json.dumps({"type": "dance"}))
        assert reply["data"]["code"] == "UNKNOWN_TYPE", reply
        reply = await ask(json.dumps({"type": "step", "data": {"move": "right"}}))
        assert reply["data"]["code"] == "VALIDATION_ERROR", reply
        reply = await ask(json.dumps({"type": "step", "data": {"action": "right"}}))
        assert reply["data"]["code"] == "EXECUTION_ERROR", reply  # step before reset
        # The session survived all of that.
        reply = await ask(json.dumps({"type": "reset", "data": {"seed": 0}}))
        assert reply["type"] == "observation" and reply["data"]["observation"]["text"] == "at 0 of 2", reply


def main():
    base = sys.argv[1].rstrip("/")
    check_http(base)
    check_episode(base)
    asyncio.run(check_malformed(base))
    print("OK")


if __name__ == "__main__":
    main()
