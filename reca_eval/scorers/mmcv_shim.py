"""Let mmdet 3.3 run on mmcv-lite (pure Python, no compiled ops), on CPU and on GPU.

mmcv has no wheel on PyPI; mmcv-lite installs without a compiler but lacks ``mmcv._ext``, the compiled
extension that ``mmcv.ops`` imports at module load. Mask2Former needs only one of those ops,
multi-scale deformable attention, and mmcv ships a pure-PyTorch version of it
(``multi_scale_deformable_attn_pytorch``) with bit-identical outputs. So: a placeholder ``mmcv._ext``
that satisfies the import-time checks, and a patch that always takes the PyTorch path (on a GPU mmcv
would otherwise call the compiled kernel, which the placeholder does not have).
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from typing import Any

PLACEHOLDER_MODULE = "mmcv._ext"


class CompiledOpUnavailable(RuntimeError):
    """A compiled mmcv op was called, but this install is mmcv-lite (no compiled extension)."""


def _missing_op(name: str):
    def op(*args: Any, **kwargs: Any) -> Any:
        raise CompiledOpUnavailable(
            f"mmcv compiled op '{name}' was called, but mmcv-lite has no compiled extension "
            "(reca-eval installs a placeholder for mmcv._ext). Only ops with a pure-PyTorch path "
            "(e.g. multi-scale deformable attention, see force_pytorch_deformable_attention) can run."
        )

    op.__name__ = name
    return op


class _PlaceholderExtension(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        # Dunder look-ups (__file__, __path__, __wrapped__ ...) must fail normally, or importlib,
        # inspect and pickle would mistake the placeholder for something it is not.
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _missing_op(name)


def install_mmcv_ext_placeholder() -> bool:
    """Register a placeholder ``mmcv._ext`` unless a real (compiled) one imports. Idempotent.

    Returns True when the placeholder is (now) in place, False when a real compiled extension exists.
    """
    existing = sys.modules.get(PLACEHOLDER_MODULE)
    if isinstance(existing, _PlaceholderExtension):
        return True
    if existing is not None:
        return False
    try:
        importlib.import_module(PLACEHOLDER_MODULE)
        return False  # a full mmcv build: use its compiled ops
    except ImportError:
        pass
    module = _PlaceholderExtension(
        PLACEHOLDER_MODULE, "placeholder for mmcv's compiled extension (mmcv-lite)"
    )
    # importlib.util.find_spec and friends require a spec on every module in sys.modules.
    module.__spec__ = importlib.machinery.ModuleSpec(PLACEHOLDER_MODULE, loader=None)
    sys.modules[PLACEHOLDER_MODULE] = module
    return True


class _PytorchDeformableAttention:
    """Stands in for mmcv's autograd Function: same ``apply`` signature, pure-PyTorch computation."""

    @staticmethod
    def apply(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
        from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

        return multi_scale_deformable_attn_pytorch(
            value, spatial_shapes, sampling_locations, attention_weights
        )


def force_pytorch_deformable_attention() -> None:
    """Make mmcv's MultiScaleDeformableAttention use the PyTorch path on every device. Idempotent.

    mmcv branches on ``IS_CUDA_AVAILABLE and value.is_cuda`` and then calls the compiled kernel through
    ``MultiScaleDeformableAttnFunction.apply``; replacing that name in the op's module routes the GPU
    branch to the same pure-PyTorch function the CPU branch uses.
    """
    install_mmcv_ext_placeholder()
    import mmcv.ops.multi_scale_deform_attn as msda

    msda.MultiScaleDeformableAttnFunction = _PytorchDeformableAttention
