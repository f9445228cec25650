"""Jetson sample: encode an image with an edgetrim ONNX artifact on TensorRT / CUDA, CPU as fallback.

    pip install edgetrim onnxruntime-gpu   # JetPack's onnxruntime-gpu wheel on a Jetson
    python encode_image.py ARTIFACT_DIR IMAGE [--repeat 20]

Only edgetrim.runtime is used: no torch on the device.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from edgetrim.runtime.errors import UserError
from edgetrim.runtime.preprocess import load_image
from edgetrim.runtime.vision import VisionEncoder

PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("image")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    try:
        encoder = VisionEncoder(args.artifact, providers=PROVIDERS)
        pixels = encoder.pixel_values(load_image(args.image))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = encoder.run(pixels)  # warm-up (TensorRT builds its engine here)
    providers = encoder.loader.active_providers()  # what ONNX Runtime chose, not what was asked for
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = encoder.run(pixels)
        times.append((time.perf_counter() - t0) * 1e3)
    print(f"providers: {', '.join(providers)}")
    print(
        f"K = {result.positions.shape[1]}, tokens {list(result.tokens.shape)}, "
        f"per partition {result.partition_budgets[0].tolist()}"
    )
    print(f"latency: median {statistics.median(times):.1f} ms over {args.repeat} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
