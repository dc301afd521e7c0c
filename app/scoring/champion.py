"""Which model scores: the registry's champion, reloaded when a new one is promoted.

``refresh()`` runs off the event loop between batches; the agent reads ``current`` at the start
of each batch, so a switch never splits a batch. A model that fails to load (corrupt file, wrong
feature order) is refused and the previous champion keeps scoring.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from app.errors import FraudstreamError
from app.scoring.model import Model
from training.registry import ModelRow

log = logging.getLogger("fraudstream.scoring")


class Champion:
    def __init__(
        self,
        champion_row: Callable[[], ModelRow | None],
        version_row: Callable[[str], ModelRow | None],
        *,
        threads: int = 1,
        device: str = "cpu",
        shadow_version: str | None = None,
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self.champion_row, self.version_row = champion_row, version_row
        self.on_refused = on_refused  # (version, reason): raise the alarm beyond the log
        self.threads, self.device = threads, device
        self.shadow_version = shadow_version
        self.current: Model | None = None
        self.shadow: Model | None = None
        self.refused: set[str] = set()
        self.switches = 0

    def _load(self, row: ModelRow) -> Model:
        return Model.load(Path(row.artefact_dir), row.version, threads=self.threads, device=self.device)

    def refresh(self) -> bool:
        """Load the registry's champion if it changed; True when the scoring model switched."""
        row = self.champion_row()
        if row is None or (self.current is not None and row.version == self.current.version):
            return False
        if row.version in self.refused:
            return False
        try:
            model = self._load(row)
        except FraudstreamError as exc:
            self.refused.add(row.version)
            keeping = self.current.version if self.current else "none"
            log.error("scoring: champion %s refused (%s); keeping %s", row.version, exc, keeping)
            if self.on_refused is not None:
                try:
                    self.on_refused(row.version, str(exc))
                except Exception as alarm:  # the alarm failing must not stop scoring
                    log.error("scoring: could not record the refusal of %s (%s)", row.version, alarm)
            return False
        previous = self.current.version if self.current else "none"
        self.current = model
        self.switches += 1
        log.info("scoring: champion %s -> %s (%s)", previous, model.version, model.shape())
        self._refresh_shadow()
        return True

    def _refresh_shadow(self) -> None:
        if self.shadow_version is None or (self.shadow and self.shadow.version == self.shadow_version):
            return
        row = self.version_row(self.shadow_version)
        if row is None:
            log.error("scoring: shadow model %s is not in the registry", self.shadow_version)
            self.shadow_version = None
            return
        try:
            self.shadow = self._load(row)
            log.info("scoring: shadow challenger %s scored beside the champion", row.version)
        except FraudstreamError as exc:
            log.error("scoring: shadow model refused (%s)", exc)
            self.shadow_version = None
