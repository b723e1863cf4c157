"""The lab's upstream: a small HTTP service on 127.0.0.1 that goes down and comes back.

    python -m herdwatch.lab._upstream PORT

It answers `GET /item/<key>` with 200 and a small JSON body (one connection per request). Once
listening it prints `{"ready": ...}` and reads one line from stdin: `down_at` and `up_at` (unix
seconds). Between them it is down: its listening socket is closed, so every connection is
refused, as when the service's process or host is gone; at `up_at` it listens again on the same
port. It runs until stdin closes or it is terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import time


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
        path = head.split(b" ", 2)[1].decode(errors="replace")
        digest = hashlib.blake2b(path.encode(), digest_size=8).hexdigest()
        body = json.dumps({"item": path.rsplit("/", 1)[-1], "v": digest}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _listen(port: int) -> asyncio.Server:
    return await asyncio.start_server(_answer, "127.0.0.1", port, backlog=4096, reuse_address=True)


async def main(port: int) -> None:
    server = await _listen(port)
    print(json.dumps({"ready": time.time()}), flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        return
    plan = json.loads(line)
    await asyncio.sleep(max(0.0, plan["down_at"] - time.time()))
    server.close()
    print(json.dumps({"down": time.time()}), flush=True)
    await asyncio.sleep(max(0.0, plan["up_at"] - time.time()))
    server = await _listen(port)
    print(json.dumps({"up": time.time()}), flush=True)
    # serve until the lab closes stdin (or terminates us)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    server.close()


if __name__ == "__main__":
    # nothing to clean up, and a thread may be blocked reading stdin: leave at once
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        asyncio.run(main(int(sys.argv[1])))
