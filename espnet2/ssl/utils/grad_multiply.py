"""Scale the gradient of a tensor without changing its value.

wav2vec 2.0 and HuBERT train the CNN feature encoder with its gradient scaled by 0.1
(fairseq ``feature_grad_mult``; ``fairseq/modules/grad_multiply.py`` @ 3d262bb2), which
stabilises pretraining (Baevski et al., 2020, arXiv:2006.11477, section 4.2).
"""

import torch


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Returns ``x`` unchanged whose gradient is multiplied by ``scale``.

    Args:
        x: Any tensor.
        scale: Gradient multiplier; 1.0 returns ``x`` itself.

    Returns:
        A tensor equal to ``x``.
    """
    if scale == 1.0:
        return x
    return _ScaleGrad.apply(x, scale)
