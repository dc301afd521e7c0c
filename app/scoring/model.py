"""A registered model loaded for scoring: XGBoost booster, its feature order, exact TreeSHAP.

Threads are pinned per worker (``nthread``): XGBoost's default of every core, with several worker
processes on one machine, turns a sub-millisecond batch predict into tens of milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from app.errors import FraudstreamError, first_line


@dataclass(frozen=True)
class Model:
    version: str
    booster: xgb.Booster
    features: tuple[str, ...]
    meta: dict[str, Any]
    device: str = "cpu"

    @classmethod
    def load(cls, artefact_dir: Path, version: str, *, threads: int = 1, device: str = "cpu") -> Model:
        """Load and check a model; any problem is one FraudstreamError (the caller keeps its old model)."""
        try:
            meta = json.loads((artefact_dir / "metadata.json").read_text())
            booster = xgb.Booster()
            booster.load_model(str(artefact_dir / "model.ubj"))
        except (OSError, ValueError, xgb.core.XGBoostError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FraudstreamError(f"cannot load model {version} from {artefact_dir}: {first[:200]}") from exc
        features = tuple(meta.get("features", []))
        if tuple(booster.feature_names or ()) != features or not features:
            raise FraudstreamError(f"model {version}: booster features do not match its metadata")
        booster.set_param({"nthread": threads, "device": device})
        model = cls(version, booster, features, meta, device)
        model.predict(np.zeros((1, len(features)), np.float32))  # fail now, not on the first batch
        return model

    def _on_device(self, x: np.ndarray) -> Any:
        """The rows on the booster's device, for predict and TreeSHAP alike (on a GPU, ``inplace_predict``
        falls back to a DMatrix copy for host rows; TreeSHAP measured the same either way, session 38)."""
        if self.device != "cuda":
            return x
        import cupy  # type: ignore[import-not-found]  # noqa: PLC0415 - only on GPU machines

        return cupy.asarray(x)

    def _matrix(self, x: np.ndarray) -> xgb.DMatrix:
        return xgb.DMatrix(self._on_device(x), feature_names=list(self.features), missing=np.nan)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Fraud probability per row of ``x`` (rows in ``self.features`` order, NaN = missing)."""
        return _on_host(self.booster.inplace_predict(self._on_device(x), missing=np.nan))

    def contributions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact TreeSHAP per row: (SHAP values [rows, features], expected value [rows]).

        ``shap.sum(axis=1) + expected == margin`` (log-odds) for every row.
        """
        contribs = _on_host(self.booster.predict(self._matrix(x), pred_contribs=True))
        return contribs[:, :-1], contribs[:, -1]

    def margin(self, x: np.ndarray) -> np.ndarray:
        return _on_host(self.booster.predict(self._matrix(x), output_margin=True))

    def shape(self) -> dict[str, int]:
        """Trees and depth (for reports and benchmarks)."""
        depth = int(self.meta.get("params", {}).get("max_depth", 0))
        return {"trees": self.booster.num_boosted_rounds(), "max_depth": depth}


def check_device(device: str) -> None:
    """Fail at start, in one line, when ``device`` cannot score here.

    Otherwise every champion would fail to load, and the scoring process would hold every batch,
    as if no model had been trained yet."""
    if device != "cuda":
        return
    if not xgb.build_info().get("USE_CUDA"):
        raise FraudstreamError(f"device cuda: xgboost {xgb.__version__} is built without CUDA")
    try:
        import cupy  # noqa: PLC0415 - only on GPU machines

        gpus = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # no CuPy, no driver, no device: each its own exception type
        raise FraudstreamError(f"device cuda: no GPU can be used ({first_line(exc)})") from exc
    if gpus == 0:
        raise FraudstreamError("device cuda: no GPU can be used (CUDA reports none)")


def _on_host(values: Any) -> np.ndarray:
    """xgboost's output as float64 on the host (CuPy arrays come back from CuPy input)."""
    return np.asarray(values if isinstance(values, np.ndarray) else values.get(), dtype=np.float64)
