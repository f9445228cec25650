"""Acceptance run on real-size presets (too slow for the test suite; `make acceptance`).

For each target x preset: export with HiRED 20% on a 2x2 grid (validation on: ONNX / ExecuTorch
outputs within 1e-4 of PyTorch, identical kept positions, K exact, positions ascending; CoreML spec
with static [1, K, D] output), then for ONNX and ExecuTorch a chunked export whose output must
equal the unchunked one within 1e-5. Prints a table and writes acceptance.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from edgetrim.export.build import export as export_artifact
from edgetrim.export.options import ExportOptions
from edgetrim.runtime.chunks import ChunkLoader
from edgetrim.runtime.manifest import open_artifact

PRESETS = ["tiny-llava-next", "clip-vit-b16", "clip-vit-l14-336"]
TARGETS = ["onnx", "executorch", "coreml"]


def main(out: Path, presets: list[str]) -> int:
    rows, ok = [], True
    for preset in presets:
        for target in TARGETS:
            t0 = time.perf_counter()
            root = out / f"{preset}-{target}"
            report = export_artifact(ExportOptions(target=target, model=preset, out=root))
            manifest = json.loads((root / "manifest.json").read_text())
            k, d = report["tokens"], manifest["source"]["token_dim"]
            row = {
                "preset": preset,
                "target": target,
                "K": k,
                "validation": report["validation"]["status"],
                "max_abs_error": report["validation"]["max_abs_error"],
                "output_shape": manifest["chunks"][-1]["outputs"][0]["shape"],
            }
            row["static_output_ok"] = row["output_shape"] == [1, k, d]
            if target != "coreml":
                chunked = export_artifact(
                    ExportOptions(
                        target=target,
                        model=preset,
                        out=out / f"{root.name}-8",
                        chunks=8 if preset != "tiny-llava-next" else 5,
                    )
                )
                spec = manifest["chunks"][0]["inputs"][0]
                x = {"pixel_values": np.random.default_rng(0).standard_normal(spec["shape"]).astype(np.float32)}
                with ChunkLoader(open_artifact(root)) as a, ChunkLoader(open_artifact(out / f"{root.name}-8")) as b:
                    want, got = a.run(x), b.run(x)
                row["chunked_vs_unchunked"] = float(np.abs(got["tokens"] - want["tokens"]).max())
                row["chunked_positions_equal"] = bool(np.array_equal(got["positions"], want["positions"]))
                row["chunks"] = len(chunked["chunks"])
                ok &= row["chunked_vs_unchunked"] <= 1e-5 and row["chunked_positions_equal"]
            ok &= row["static_output_ok"] and report["validation"]["status"] in ("passed", "spec-only")
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / "acceptance.json").write_text(json.dumps(rows, indent=2))
    print("ALL OK" if ok else "FAILURES", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "artifacts/acceptance"), sys.argv[2:] or PRESETS))
