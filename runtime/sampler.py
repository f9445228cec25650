"""Open-Sora 1.2 rectified-flow sampling with TDTM steps and LPL, in numpy (no torch).

Schedule: ``t_i = (1 - i / N) * 1000`` for i < N, each shifted by Open-Sora 1.2's ``timestep_transform``
(``t' = r t / (1 + (r - 1) t)`` on t / 1000, r from the pixel resolution and frame count). Step i:
``z += v_i * (t_i - t_{i+1}) / 1000`` (``t_N = 0``), v_i the classifier-free-guided velocity
``v_u + g (v_c - v_u)``. Steps ``i < merge_steps`` use the ``tdtm`` function, later ones ``plain``.

LPL (Linear Proportional Leap): at leap step k the model is evaluated once more and
``z_0 = z + v_k * t_k / 1000`` (one Euler step over all remaining time) ends sampling: k + 1 model
evaluations instead of N. Fixed: ``leap_at = k``. Adaptive (``LeapRule``): from step 1 on, compare the
cosine similarity of consecutive velocities ``s_i = cos(v_i, v_{i-1})`` with the best seen so far; s_i
improves when ``s_i > best + threshold``, otherwise a stall is counted (an improvement resets it). The
leap happens at the first step i with ``i >= min_steps`` and ``stalls >= patience``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgetrim.runtime import contract
from edgetrim.runtime.errors import UserError

NUM_TIMESTEPS = 1000.0
BASE_RESOLUTION = 512 * 512


def shift_ratio(
    pixel_height: int, pixel_width: int, pixel_frames: int, base_resolution: int = BASE_RESOLUTION
) -> float:
    """Open-Sora 1.2 ``timestep_transform``'s r: sqrt(H*W / 512^2) * sqrt(frames // 17 * 5) (1 frame: 1)."""
    frames = 1 if pixel_frames == 1 else pixel_frames // 17 * 5
    return math.sqrt(pixel_height * pixel_width / base_resolution) * math.sqrt(frames)


def timesteps(num_steps: int, ratio: float, num_timesteps: float = NUM_TIMESTEPS) -> np.ndarray:
    """[N] shifted timesteps in (0, num_timesteps], descending."""
    t = np.array([(1.0 - i / num_steps) for i in range(num_steps)], dtype=np.float64)
    return ratio * t / (1.0 + (ratio - 1.0) * t) * num_timesteps


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


@dataclass
class LeapRule:
    """Adaptive LPL: leap once cosine similarity of consecutive velocities stalls (see module doc)."""

    min_steps: int = 10
    patience: int = 3
    threshold: float = 1e-3
    best: float = -math.inf
    stalls: int = 0
    previous: np.ndarray | None = None
    history: list[float] = field(default_factory=list)

    def observe(self, step: int, velocity: np.ndarray) -> bool:
        """Record v_step; True when sampling should leap at this step."""
        if self.previous is not None:
            sim = cosine(velocity, self.previous)
            self.history.append(sim)
            if sim > self.best + self.threshold:
                self.best, self.stalls = sim, 0
            else:
                self.stalls += 1
        self.previous = velocity
        return step >= self.min_steps and self.stalls >= self.patience


@dataclass
class SampleResult:
    latent: np.ndarray
    steps_run: int  # model evaluations (CFG pairs count once)
    leap_step: int | None  # step index at which LPL leapt, None: all steps ran
    functions: list[str]  # function used at each evaluated step
    step_ms: list[float]
    similarities: list[float]


def check_plan(num_steps: int, merge_steps: int, leap_at: int | None) -> None:
    if num_steps < 1:
        raise UserError(f"`steps` {num_steps} must be at least 1: Open-Sora 1.2 uses 30")
    if not 0 <= merge_steps <= num_steps:
        raise UserError(f"`merge_steps` {merge_steps} is outside 0..{num_steps} (`steps`): e.g. `merge_steps` 15")
    if leap_at is not None and not 1 <= leap_at <= num_steps - 1:
        raise UserError(f"`leap_at` {leap_at} is outside 1..{num_steps - 1} (`steps` {num_steps}): e.g. `leap_at` 15")


def sample(
    velocity: Callable[[np.ndarray, float, str], np.ndarray],
    noise: np.ndarray,
    schedule: np.ndarray,
    merge_steps: int = 0,
    leap_at: int | None = None,
    rule: LeapRule | None = None,
    num_timesteps: float = NUM_TIMESTEPS,
    progress: Callable[[int], None] = lambda i: None,
) -> SampleResult:
    """Rectified-flow Euler sampling from ``noise`` [C, T, H, W]; ``velocity(z, t, function)`` -> guided v."""
    n = len(schedule)
    check_plan(n, merge_steps, leap_at)
    z = noise.astype(np.float32)
    functions, step_ms = [], []
    leap = None
    for i, t in enumerate(schedule):
        function = contract.TDTM if i < merge_steps else contract.PLAIN
        start = time.perf_counter()
        v = velocity(z, float(t), function)
        step_ms.append((time.perf_counter() - start) * 1e3)
        functions.append(function)
        progress(i)
        adaptive = rule is not None and rule.observe(i, v)
        if (leap_at is not None and i == leap_at) or (leap_at is None and adaptive and i < n - 1):
            z = z + v * np.float32(t / num_timesteps)
            leap = i
            break
        dt = (t - schedule[i + 1]) if i < n - 1 else t
        z = z + v * np.float32(dt / num_timesteps)
    return SampleResult(z, len(functions), leap, functions, step_ms, list(rule.history) if rule else [])
