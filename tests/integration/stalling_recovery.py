"""The worker with its first table recovery made to stall, for tests/integration/test_faults.py.

Right after the recovery seeks the changelog partitions, Faust's consumer is told that every
changelog message was read already, so its fetch loop drops them all, as it would a message fetched
before the seek. The recovery then waits for messages that never come, the shape of the stall seen
in CI (no event received on any changelog partition). Only the first seek is spoiled: a restarted
recovery seeks again and reads the changelog.

Run as ``python -c "import tests.integration.stalling_recovery"`` followed by the CLI's arguments.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from app.cli import main

log = logging.getLogger("fraudstream.tests")
_real_seek_wait = AIOKafkaConsumerThread._seek_wait
_spoiled: list[Any] = []


async def _seek_wait(self: Any, consumer: Any, partitions: Any) -> None:
    await _real_seek_wait(self, consumer, partitions)
    changelogs = [tp for tp in partitions if tp.topic.endswith("-changelog")]
    if changelogs and not _spoiled:
        _spoiled.extend(changelogs)
        for tp in changelogs:
            self.consumer._read_offset[tp] = 2**62  # "read already": every message of tp is dropped
        log.warning("test: the recovery's seek of %d changelog partitions is spoiled", len(changelogs))


AIOKafkaConsumerThread._seek_wait = _seek_wait  # type: ignore[method-assign]
main()
