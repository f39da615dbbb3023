#!/usr/bin/env python3
"""A misbehaving upstream for the deadline tests: accepts TCP connections on 127.0.0.1 and then
stalls the way tarpits and broken relays do.

usage: tarpit.py MODE      MODE: silent   never says anything
                                 partial  sends "220 tarpit" without a line end, then stalls
Prints {"port": PORT} once listening; runs until killed. Connections are held open.
"""
import asyncio
import json
import sys


async def main():
    mode = sys.argv[1]
    held = []

    async def handle(reader, writer):
        held.append(writer)
        if mode == "partial":
            writer.write(b"220 tarpit")
            await writer.drain()
        await asyncio.sleep(3600)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
