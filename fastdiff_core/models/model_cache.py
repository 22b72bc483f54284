"""A worker's loaded models, kept between runs: least recently used first out, bounded in memory.

A worker process loads a model the first time a run names it and keeps it (on the run's device, the
GPU when there is one) for the runs that follow; when the kept models' parameters exceed
``FASTDIFF_MODEL_CACHE_MB`` (default 2048 MiB) the least recently used are dropped (the newest is
always kept, however large). A cached model is reused only while its registry entry's checksum is the
one it was loaded with; weights whose checksum no longer matches their registration are refused.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import torch

from fastdiff_core.models.loading import LoadedModel, load_source
from fastdiff_core.models.model_registry import model_entry

DEFAULT_CACHE_MB = 2048.0


def cache_limit_mb() -> float:
    raw = os.environ.get("FASTDIFF_MODEL_CACHE_MB", str(DEFAULT_CACHE_MB))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"FASTDIFF_MODEL_CACHE_MB={raw!r} must be a number of MiB > 0")
    return value


@dataclass(frozen=True)
class CacheKey:
    name: str
    checksum: str | None
    device: str


class ModelCache:
    """name -> LoadedModel for one process. ``get`` loads on a miss; ``hits`` and ``loads`` count."""

    def __init__(self, limit_mb: float | None = None) -> None:
        self.limit_mb = limit_mb
        self._models: OrderedDict[CacheKey, LoadedModel] = OrderedDict()
        self.hits = 0
        self.loads = 0

    def get(self, name: str, device: torch.device | str = "cpu") -> tuple[LoadedModel, bool]:
        """(the model, whether it was already loaded)."""
        entry = model_entry(name)
        key = CacheKey(name, entry.get("checksum"), str(torch.device(device)))
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
            self.hits += 1
            return model, True
        model = load_source(entry["kind"], entry["source"], name)
        if entry.get("checksum") and model.record.checksum != entry["checksum"]:
            raise ValueError(f"model={name!r}: the weights at {entry['source']} have sha256 {model.record.checksum[:16]}..., "
                             f"not the {entry['checksum'][:16]}... registered; re-add it "
                             f"(`fastdiff models add {entry['source']} --name {name} --replace`)")
        model.to(device)
        self.loads += 1
        self._models[key] = model
        self._evict()
        return model, False

    def _evict(self) -> None:
        limit = (self.limit_mb if self.limit_mb is not None else cache_limit_mb()) * 2**20
        while len(self._models) > 1 and sum(m.nbytes for m in self._models.values()) > limit:
            self._models.popitem(last=False)

    def __len__(self) -> int:
        return len(self._models)

    def names(self) -> list[str]:
        return [k.name for k in self._models]


MODELS = ModelCache()  # this process's models (a worker's pool process keeps them between runs)
