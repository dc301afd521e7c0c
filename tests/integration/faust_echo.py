"""A minimal Faust app for the integration test: reads ECHO_IN, writes each value doubled to ECHO_OUT.

Run as ``python tests/integration/faust_echo.py worker``; configured entirely by environment.
"""

from __future__ import annotations

import os
from typing import Any

import faust

app = faust.App(
    os.environ["ECHO_APP_ID"],
    broker=f"kafka://{os.environ['FRAUDSTREAM_KAFKA_BOOTSTRAP']}",
    datadir=os.environ["ECHO_DATADIR"],
    web_enabled=False,
    topic_partitions=4,
    consumer_auto_offset_reset="earliest",
)
source = app.topic(os.environ["ECHO_IN"], value_serializer="json")
sink = app.topic(os.environ["ECHO_OUT"], value_serializer="json")
counts = app.Table("echo-counts", default=int)


@app.agent(source)
async def double(stream: Any) -> None:
    async for event in stream.events():
        counts[event.key] += 1
        value = {**event.value, "doubled": event.value["n"] * 2, "seen": counts[event.key]}
        await sink.send(key=event.key, value=value)


if __name__ == "__main__":
    app.main()
