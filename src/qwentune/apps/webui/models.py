"""The models the page answers with, loaded once and shared by every browser session (no gradio here).

The page's model row (base model, adapter, config file) names a model; the chat and evaluate tabs ask
MODELS for it. One loaded base + adapter is kept per (base, adapter, precision, trust_remote_code), loaded
through the CLI's own load_for_inference (apps.compare.load_pair: with an adapter, one copy of the base
weights serves both sides, the adapter switched off being the base). Two sessions asking for the same
model at once get the same object, loaded once. Generation on one model runs one call at a time (its
lock): transformers' generate is not meant to run twice at once on one module, and the adapter switch
(peft's disable_adapter) changes the model for every thread. Export and merge load their own fp32 copy, as
the CLI does: merging changes the model in place.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator

from ...config import Config
from ...errors import UserError
from ...models.load import LoadedModel
from ...models.precision import Precision, choose_precision
from ..compare import Pair
from .common import WebuiSettings, model_reference, page_config

BASE_FIELD = "the page's base model"  # what the messages of loading name as the thing to fix


def row_config(settings: WebuiSettings, config_text: str, model_text: str, adapter_text: str) -> Config:
    """The config the page's model row describes: common.page_config (the config file and the base model, as the
    command line loads them) with the row's adapter as adapter_path (model_reference; empty: none, the base model
    alone). UserError for a path outside the page's folders and whatever load_config finds wrong in the file."""
    cfg = page_config(config_text, model_text, settings)
    adapter = (adapter_text or "").strip()
    cfg.eval.adapter_path = model_reference(adapter, settings, "Adapter") if adapter else None
    return cfg


def content_stamp(reference: str | None, adapter: bool = False) -> tuple:
    """What tells a changed local model or adapter from the one loaded before: the folder loaded from (for an
    adapter, the one find_adapter picks: a training output's final adapter, else its best or newest
    checkpoint) and the name, size and modification time of each file in it (for a file: of the file).
    Empty for a hub id. Training into the adapter's folder while the page runs changes it, so the page
    never answers with an adapter older than the one on disk. UserError from find_adapter for a local
    adapter folder that holds none."""
    from pathlib import Path

    from ...models.load import find_adapter

    if not reference or not Path(reference).exists():
        return ()
    path = Path(reference)
    if adapter and path.is_dir():
        path = find_adapter(path, log=lambda message: None)[1]
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    return (str(path), *((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def no_finetuned_model() -> UserError:
    """The error for the fine-tuned side asked of a model row without an adapter."""
    return UserError("adapter: empty, so there is no fine-tuned model; type the training output folder in the "
                     "adapter field, or choose the base model.")


@dataclass(frozen=True)
class ModelSpec:
    """What makes two loaded models the same one: the references, the precision and the files' state."""

    base: str
    adapter: str | None
    precision: Precision
    trust_remote_code: bool = False
    stamp: tuple = ()  # content_stamp of the base and of the adapter

    @classmethod
    def of(cls, cfg: Config, precision: Precision | None = None) -> ModelSpec:
        """cfg's model and adapter in `precision` (default: as the CLI answers, training.bf16 / fp16), with
        the state of their files now."""
        base, adapter = cfg.model.model_name_or_path, cfg.eval.adapter_path
        return cls(base, adapter, precision or choose_precision(cfg.training.bf16, cfg.training.fp16),
                   cfg.model.trust_remote_code, (content_stamp(base), content_stamp(adapter, adapter=True)))


class SharedModel:
    """One loaded base (+ adapter) for every session, and the lock that lets one generation at a time use it."""

    def __init__(self, spec: ModelSpec, pair: Pair):
        self.spec = spec
        self.pair = pair
        self.lock = threading.Lock()

    @property
    def has_finetuned(self) -> bool:
        return self.spec.adapter is not None

    def busy(self) -> bool:
        """Whether a generation (of another session, say) is running on it now."""
        return self.lock.locked()

    def side(self, name: str) -> tuple[LoadedModel, bool]:
        """(model, adapter on?) for "base" or "finetuned"; UserError for the fine-tuned side without an adapter."""
        if name == "finetuned" and not self.has_finetuned:
            raise no_finetuned_model()
        return self.pair.model_and_switch(name)

    def description(self, name: str) -> dict:
        """LoadedModel.description of a side: the base side of an adapter pair says it ran without the adapter."""
        model, adapter_on = self.side(name)
        if model.has_adapter and not adapter_on:
            return {**model.description, "finetuned": None, "kind": "base"}
        return dict(model.description)

    @contextlib.contextmanager
    def generating(self) -> Iterator[Pair]:
        """Hold the model for the block: other sessions' generation waits until it ends."""
        with self.lock:
            yield self.pair


def load_shared(spec: ModelSpec, log=print) -> SharedModel:
    """Load what `spec` names, as the CLI loads it: load_pair with an adapter (one copy of the base for both
    sides where the adapter is a LoRA), load_for_inference alone without one. UserError as they say."""
    from ...models.load import load_for_inference
    from ..compare import load_pair

    if spec.adapter:
        pair = load_pair(spec.base, spec.adapter, spec.precision, spec.trust_remote_code, log=log,
                         base_option=BASE_FIELD)
    else:
        loaded = load_for_inference(spec.base, None, spec.precision, spec.trust_remote_code, log=log,
                                    base_option=BASE_FIELD)
        pair = Pair(loaded, loaded)
    return SharedModel(spec, pair)


class ModelCache:
    """The loaded models of the page, newest last; at most `keep` of them (a 7B model in bf16 is ~15 GB).

    A model asked for again is the same object. Loading a new one first drops the oldest beyond keep - 1
    from the cache, so memory holds one model less while it loads; a session still generating on a dropped
    model keeps it alive until it finishes. One load at a time (two sessions asking for one model load it
    once)."""

    def __init__(self, keep: int = 1, loader=load_shared):
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.keep = keep
        self.loader = loader
        self._models: OrderedDict[ModelSpec, SharedModel] = OrderedDict()
        self._guard = threading.Lock()  # the dict
        self._loading = threading.Lock()  # one load at a time

    def get(self, spec: ModelSpec, log=print) -> SharedModel:
        """The loaded model for `spec`, loading it when it is not loaded (UserError as load_shared says)."""
        with self._guard:
            if spec in self._models:
                self._models.move_to_end(spec)
                return self._models[spec]
        with self._loading:
            with self._guard:  # loaded by another session while this one waited
                if spec in self._models:
                    self._models.move_to_end(spec)
                    return self._models[spec]
                dropped = False
                while len(self._models) >= self.keep:
                    self._models.popitem(last=False)
                    dropped = True
            if dropped:
                release_memory()
            shared = self.loader(spec, log)
            with self._guard:
                self._models[spec] = shared
            return shared

    def loaded(self) -> list[ModelSpec]:
        """The specs of the models held now, oldest first."""
        with self._guard:
            return list(self._models)

    def clear(self) -> None:
        """Drop every model (sessions still generating keep theirs until they finish)."""
        with self._guard:
            self._models.clear()
        release_memory()


def release_memory() -> None:
    """Give back what dropped models held: Python's cycles, and the CUDA allocator's cached blocks."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


MODELS = ModelCache()  # the page's models: one process serves every browser session
