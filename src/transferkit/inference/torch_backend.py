"""The one eager PyTorch forward pass that every frozen-feature, embedding and prediction path uses."""

from __future__ import annotations

import torch


def forward(module: torch.nn.Module, x: torch.Tensor, *, device: torch.device | str | None = None,
            autocast_dtype: torch.dtype | None = None, channels_last: bool = True, flatten: bool = True) -> torch.Tensor:
    """``module(x)`` without autograd, on ``device`` (default: where the module's parameters are).

    Args:
        module: a ``(B, 3, H, W) -> (B, ...)`` module in eval mode.
        x: a float batch, normalised as the weights expect.
        device: where to run; ``x`` is moved there.
        autocast_dtype: run under autocast in this dtype (bf16/fp16); None: plain fp32.
        channels_last: feed channels-last memory (faster convolutions on CPU and GPU; fp32 results
            differ from contiguous memory by float rounding only).
        flatten: reshape the output to ``(B, D)``.

    Returns:
        float32 outputs, on ``device``.
    """
    if device is None:
        param = next(module.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    x = x.to(device, non_blocking=True)
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    with torch.inference_mode():
        if autocast_dtype is not None:
            with torch.autocast(device.type, dtype=autocast_dtype):
                y = module(x)
        else:
            y = module(x)
    y = y.float()
    return y.reshape(y.shape[0], -1) if flatten else y
