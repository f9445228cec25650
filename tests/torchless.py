"""A prelude for ``python -c``: blocks every ``torch`` import, as on a runtime-only install."""

BLOCK_TORCH = r"""
import importlib.abc
import json
import sys


class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked in this test)", name=name)
        return None


sys.meta_path.insert(0, BlockTorch())
try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the torch blocker does not work")
"""
