"""Chunked execution within a memory budget (CI-DL): run chunk i while chunk i+1 loads.

A ``ChunkLoader`` runs an artifact's chunks in manifest order, passing tensors by name. Under a
memory budget it keeps the longest prefix of chunks that fits resident (loaded once, kept) and
streams the rest: each streamed chunk is loaded by a background thread while the previous chunk
computes, and released right after it runs. After the last chunk the thread already loads the
first streamed chunk of the next invocation (diffusion samplers call the same chunks many times).

Budget accounting uses the chunk files' bytes (weights dominate). Overlap needs room for two
streamed chunks at once; a budget that only fits one streams without overlap.

A loader runs one pipeline of the artifact (``Artifact.pipeline``). ``run(feeds, function=...)``
picks the function of multi-function chunks (e.g. ``tdtm`` for merged steps, ``plain`` after);
chunks without functions run their one program. Each (chunk, function) is its own backend.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from edgetrim.runtime import contract
from edgetrim.runtime.backends import Backend, OnnxBackend, Providers, open_backend
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import Artifact

MB = 1 << 20
TIMELINE_EVENTS = 4096  # the timeline keeps the latest events (a decode loop runs the pipeline per token)


class ChunkLoadError(UserError):
    """A chunk failed to load (in the loader thread); the message names the chunk."""


@dataclass(frozen=True)
class MemoryPlan:
    resident: tuple[int, ...]  # chunk indices kept loaded
    streamed: tuple[int, ...]  # chunk indices loaded before use and released after
    overlap: bool  # whether streamed loads run ahead on the loader thread
    budget_bytes: int | None

    def describe(self) -> str:
        if not self.streamed:
            return "all chunks resident"
        mode = "with overlap" if self.overlap else "without overlap (budget fits one streamed chunk)"
        return f"{len(self.resident)} resident, {len(self.streamed)} streamed {mode}"


def chunk_bytes(chunk: dict) -> int:
    return sum(f["bytes"] for f in chunk["files"])


def plan_memory(
    chunks: list[dict], budget_mb: float | None, overlap: bool = True, sizes: list[int] | None = None
) -> MemoryPlan:
    """Longest resident prefix such that resident bytes + the streaming slot(s) fit the budget. ``sizes``:
    each chunk's bytes (default: its files', ``chunk_bytes``)."""
    sizes = sizes or [chunk_bytes(c) for c in chunks]
    if budget_mb is None:
        return MemoryPlan(tuple(range(len(chunks))), (), False, None)
    budget = int(budget_mb * MB)
    largest = max(sizes)
    if budget < largest:
        raise UserError(
            f"`memory_budget_mb` {budget_mb:g} MB is smaller than the largest chunk "
            f"({chunks[sizes.index(largest)]['name']}, {largest / MB:.1f} MB): pass at least {largest / MB:.1f}"
        )
    if sum(sizes) <= budget:
        return MemoryPlan(tuple(range(len(chunks))), (), False, budget)
    for two_slots in (True, False) if overlap else (False,):
        for split in range(len(chunks) - 1, -1, -1):
            rest = sorted(sizes[split:])
            slot = sum(rest[-2:]) if two_slots and len(rest) > 1 else rest[-1]
            if sum(sizes[:split]) + slot <= budget:
                return MemoryPlan(
                    tuple(range(split)), tuple(range(split, len(chunks))), two_slots and len(rest) > 1, budget
                )
    return MemoryPlan((), tuple(range(len(chunks))), False, budget)


@dataclass
class Event:
    chunk: str
    kind: str  # load | compute
    start: float
    end: float
    invocation: int


@dataclass
class Timeline:
    """The latest load / compute events, at most ``TIMELINE_EVENTS`` (older ones are dropped)."""

    events: deque[Event] = field(default_factory=lambda: deque(maxlen=TIMELINE_EVENTS))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *args) -> None:
        with self.lock:
            self.events.append(Event(*args))


def check_io(artifact: Artifact, chunks: list[dict], inputs: set[str], function: str | None = None) -> None:
    """Every chunk input (of ``function``) must come from the pipeline inputs or an earlier chunk, with the
    same shape and dtype."""
    available: dict[str, tuple] = {}
    for chunk in chunks:
        chunk_inputs, chunk_outputs = artifact.io(chunk, function)
        for spec in chunk_inputs:
            key = (tuple(spec["shape"]), spec["dtype"])
            if spec["name"] in available:
                if available[spec["name"]] != key:
                    raise UserError(
                        f"chunk {chunk['name']!r} expects {spec['name']} {list(key[0])} {key[1]} but the previous "
                        f"chunk gives {list(available[spec['name']][0])} {available[spec['name']][1]}: "
                        "the chunks do not line up, re-export the artifact"
                    )
            elif spec["name"] not in inputs:
                raise UserError(
                    f"chunk {chunk['name']!r} needs {spec['name']!r}, which no earlier chunk produces: "
                    "the chunks do not line up, re-export the artifact"
                )
            else:
                available[spec["name"]] = key
        for spec in chunk_outputs:
            available[spec["name"]] = (tuple(spec["shape"]), spec["dtype"])


NUMPY = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}


def example_feeds(chunk: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of a chunk's declared shapes (integers zero: valid indices and positions), for
    warm-ups and timings."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in chunk["inputs"]:
        dtype = NUMPY[spec["dtype"]]
        shape = spec["shape"]
        floating = np.issubdtype(dtype, np.floating)
        feeds[spec["name"]] = rng.standard_normal(shape).astype(dtype) if floating else np.zeros(shape, dtype)
    return feeds


def open_chunk(
    artifact: Artifact, chunk: dict, function: str | None, providers: Providers | None = None, lean: bool = False
) -> Backend:
    """The backend running ``function`` of one chunk of a verified artifact; load failures name the chunk.
    ``providers`` given per program (a callable) is asked with the program's sha256."""
    path, method = artifact.program(chunk, function)
    relative = path.relative_to(artifact.root).as_posix()
    sha256 = next(f["sha256"] for f in chunk["files"] if f["path"] == relative)
    inputs, outputs = artifact.io(chunk, function)
    try:
        return open_backend(
            artifact.target,
            path,
            [i["name"] for i in inputs],
            [o["name"] for o in outputs],
            providers(sha256) if callable(providers) else providers,
            program_sha256=sha256,
            preoptimized=chunk.get("optimized") == contract.ORT_EXTENDED,
            lean=lean,
            method=method,
        )
    except UserError:
        raise
    except Exception as exc:
        raise ChunkLoadError(f"chunk {chunk['name']!r} failed to load: {type(exc).__name__}: {exc}") from exc


class ChunkLoader:
    """Runs one pipeline of a verified artifact in order under a memory budget; ``run(feeds) -> outputs``.

    ``inputs``: the names the caller feeds (default: the first chunk's inputs); ``outputs``: the names
    ``run`` returns (default: the last chunk's outputs). ``lean`` (default: on when streaming) opens
    ONNX sessions with memory-mapped weights and no per-session arena, see ``OnnxBackend``.
    ``function``: the function of multi-function chunks ``run`` runs unless told otherwise (None: each
    chunk's first); the pipeline's inputs and outputs are checked for every function it runs.
    """

    def __init__(
        self,
        artifact: Artifact,
        memory_budget_mb: float | None = None,
        overlap: bool = True,
        providers: Providers | None = None,
        lean: bool | None = None,
        pipeline: str | None = None,
        inputs: list[str] | None = None,
        outputs: list[str] | None = None,
        function: str | None = None,
    ) -> None:
        self.artifact = artifact
        self.chunks = artifact.pipeline(pipeline)
        self.names = [c["name"] for c in self.chunks]
        self.providers = providers
        self.function = function
        self.input_names = inputs or [spec["name"] for spec in artifact.io(self.chunks[0], function)[0]]
        self.output_names = outputs or [o["name"] for o in artifact.io(self.chunks[-1], function)[1]]
        self.checked: set[str | None] = set()
        self._check(function)
        sizes = [artifact.weight_bytes(c) for c in self.chunks]
        self.plan = plan_memory(self.chunks, memory_budget_mb, overlap, sizes)
        self.lean = bool(self.plan.streamed) if lean is None else lean  # lean sessions when streaming
        self.timeline = Timeline()
        self.graph_cache: Counter[str] = Counter()  # ONNX loads by optimized-graph cache result: hit / miss / off
        self._count_lock = threading.Lock()
        self.invocation = 0
        self.resident: dict[tuple[int, str | None], Backend] = {}
        self.pending: dict[tuple[int, str | None], Future] = {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgetrim-loader")

    def _check(self, function: str | None) -> None:
        """The chunks of ``function`` line up from the pipeline inputs and produce its outputs (once each)."""
        if function in self.checked:
            return
        check_io(self.artifact, self.chunks, set(self.input_names), function)
        produced = {spec["name"] for c in self.chunks for spec in self.artifact.io(c, function)[1]}
        missing = [n for n in self.output_names if n not in produced]
        if missing:
            raise UserError(f"no chunk produces {', '.join(missing)}: the artifact does not match this runtime")
        self.checked.add(function)

    # -- loading
    def _key(self, index: int, function: str | None) -> tuple[int, str | None]:
        """Backends are per (chunk, function); a chunk without functions has one, whatever is asked, and
        ``None`` means a multi-function chunk's first function."""
        functions = self.chunks[index].get("functions")
        return (index, (function or next(iter(functions))) if functions else None)

    def _load(self, index: int, function: str | None, invocation: int) -> Backend:
        chunk = self.chunks[index]
        t0 = time.perf_counter()
        backend = open_chunk(self.artifact, chunk, function, self.providers, self.lean)
        self.timeline.add(chunk["name"], "load", t0, time.perf_counter(), invocation)
        if isinstance(backend, OnnxBackend):
            with self._count_lock:  # loads also run on the prefetch thread
                self.graph_cache[backend.cache] += 1
        return backend

    def _prefetch(self, index: int, function: str | None, invocation: int) -> None:
        key = self._key(index, function)
        if key not in self.pending and key not in self.resident:
            self.pending[key] = self.pool.submit(self._load, index, function, invocation)

    def _acquire(self, index: int, function: str | None) -> Backend:
        key = self._key(index, function)
        if key in self.resident:
            return self.resident[key]
        for stale in [k for k in self.pending if k[0] == index and k != key]:  # prefetched another function
            self.pending.pop(stale).cancel()
        if key in self.pending:
            backend = self.pending.pop(key).result()  # waits; re-raises the loader's error here
        else:
            backend = self._load(index, function, self.invocation)
        if index in self.plan.resident:
            self.resident[key] = backend
        return backend

    def _next_streamed(self, index: int) -> int | None:
        """The streamed chunk that runs after ``index`` (wrapping to the next invocation)."""
        streamed = self.plan.streamed
        if not streamed:
            return None
        later = [s for s in streamed if s > index]
        return later[0] if later else streamed[0]

    def active_providers(self) -> list[str]:
        """The execution providers the runtime chose for the resident chunks (not those asked for)."""
        chosen: list[str] = []
        for backend in self.resident.values():
            chosen += [p for p in backend.providers if p not in chosen]
        return chosen

    def warm(self, function: str | None = None) -> None:
        """Load the resident chunks now (otherwise they load on first use)."""
        for index in self.plan.resident:
            self._acquire(index, function or self.function)

    def retain(self, function: str | None) -> None:
        """Release the resident backends of every function but ``function`` (e.g. a language model's other
        prefill lengths: ONNX Runtime and XNNPACK pack a function's weights for it alone)."""
        keep = {self._key(index, function) for index in range(len(self.chunks))}
        for key in [k for k in self.resident if k not in keep]:
            del self.resident[key]

    # -- running
    def run(self, feeds: dict[str, np.ndarray], function: str | None = None) -> dict[str, np.ndarray]:
        """Run the pipeline once; ``function`` selects the variant of multi-function chunks (default: the
        loader's ``function``)."""
        function = function or self.function
        self._check(function)
        absent = [n for n in self.input_names if n not in feeds]
        if absent:
            raise UserError(f"missing input {', '.join(absent)} for pipeline {'/'.join(self.names)}")
        env = dict(feeds)
        invocation = self.invocation
        for index, chunk in enumerate(self.chunks):
            backend = self._acquire(index, function)
            if self.plan.overlap:
                nxt = self._next_streamed(index)
                if nxt is not None and nxt != index:  # the next invocation usually runs the same function
                    self._prefetch(nxt, function, invocation + int(nxt <= index))
            t0 = time.perf_counter()
            out = backend.run({spec["name"]: env[spec["name"]] for spec in self.artifact.io(chunk, function)[0]})
            self.timeline.add(chunk["name"], "compute", t0, time.perf_counter(), invocation)
            env.update(out)
            if index not in self.plan.resident:
                del backend  # released: the next use loads it again
        self.invocation += 1
        return {name: env[name] for name in self.output_names}

    def close(self) -> None:
        for future in self.pending.values():
            future.cancel()
        self.pool.shutdown(wait=True)
        self.pending.clear()
        self.resident.clear()

    def __enter__(self) -> ChunkLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
