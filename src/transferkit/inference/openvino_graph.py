"""OpenVINO graphs of the native ResNet and EfficientNet-Lite modules, written from their weights.

A cold run converts its model before the first image can be embedded; through PyTorch's ONNX
exporter that costs ~1 s for EfficientNet-Lite0, against 0.05 s here. The two native
architectures are plain (convolutions with BatchNorm, ReLU or ReLU6, a max pool, residual adds,
a global average pool), so their graph is written with OpenVINO's opset, BatchNorm folded into
the convolutions, for a fixed square input (TensorFlow's "same" padding becomes static pads).
:class:`~transferkit.inference.runner.InferenceRunner` checks the result against eager PyTorch
as it checks any conversion; any other module, or one in training mode, goes through the exporter.
"""

from __future__ import annotations

import numpy as np
from torch import nn


def openvino_model(module: nn.Module, input_size: int):
    """The ``openvino.Model`` of a native ResNet or EfficientNet-Lite (bare or in a ``FeatureBackbone``)
    in eval mode, input ``(-1, 3, input_size, input_size)`` float32, output ``(-1, num_features)``;
    None for any other module."""
    from ..backbones._module import FeatureBackbone
    from ..backbones._native import EfficientNetLite, ResNet

    inner = module.model if isinstance(module, FeatureBackbone) else module
    if type(inner) not in (ResNet, EfficientNetLite) or module.training or inner.training:
        return None
    import openvino as ov
    import openvino.opset13 as ops

    images = ops.parameter([-1, 3, input_size, input_size], np.float32, name="images")
    g = _Graph(ops, input_size)
    x = g.resnet(images, inner) if isinstance(inner, ResNet) else g.efficientnet(images, inner)
    x = ops.reduce_mean(x, ops.constant(np.array([2, 3], dtype=np.int64)), keep_dims=False)
    x.output(0).get_tensor().set_names({"features"})
    return ov.Model([x], [images], "transferkit_native")


class _Graph:
    """Builds nodes while tracking the (static) spatial size."""

    def __init__(self, ops, size: int):
        self.ops = ops
        self.size = size

    def conv_bn(self, x, conv: nn.Conv2d, bn: nn.BatchNorm2d, act: str | None):
        """``act(bn(conv(x)))`` with the BatchNorm folded into the weights; ``act``: relu, relu6 or None."""
        from ..backbones._native import Conv2dSame, _same_pad

        ops = self.ops
        w = conv.weight.detach().double().cpu().numpy()
        scale = (bn.weight.detach().double() / (bn.running_var.double() + bn.eps).sqrt()).cpu().numpy()
        bias = bn.bias.detach().double().cpu().numpy() - bn.running_mean.double().cpu().numpy() * scale
        if conv.bias is not None:
            bias = bias + conv.bias.detach().double().cpu().numpy() * scale
        w = (w * scale[:, None, None, None]).astype(np.float32)
        k, s = conv.kernel_size[0], conv.stride[0]
        if isinstance(conv, Conv2dSame):
            pad = _same_pad(self.size, k, s, conv.dilation[0])
            begin, end = pad // 2, pad - pad // 2
        else:
            begin = end = conv.padding[0]
        args = ([s, s], [begin, begin], [end, end], [1, 1])
        if conv.groups == 1:
            y = ops.convolution(x, ops.constant(w), *args)
        else:  # (out, in/groups, kh, kw) -> (groups, out/groups, in/groups, kh, kw)
            y = ops.group_convolution(x, ops.constant(w.reshape(conv.groups, -1, *w.shape[1:])), *args)
        self.size = (self.size + begin + end - k) // s + 1
        y = ops.add(y, ops.constant(bias.astype(np.float32).reshape(1, -1, 1, 1)))
        if act == "relu":
            return ops.relu(y)
        return ops.clamp(y, 0.0, 6.0) if act == "relu6" else y

    # -- ResNet ----------------------------------------------------------------------------------
    def resnet(self, x, m):
        from ..backbones._native import Bottleneck

        ops = self.ops
        x = self.conv_bn(x, m.conv1, m.bn1, "relu")
        x = ops.max_pool(x, [2, 2], [1, 1], [1, 1], [1, 1], [3, 3], rounding_type="floor").output(0)
        self.size = (self.size + 2 - 3) // 2 + 1
        for layer in (m.layer1, m.layer2, m.layer3, m.layer4):
            for block in layer:
                identity, size_in = x, self.size
                if block.downsample is not None:  # same output size as the main path, which starts again from size_in
                    identity = self.conv_bn(x, block.downsample[0], block.downsample[1], None)
                    self.size = size_in
                convs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
                if isinstance(block, Bottleneck):
                    convs.append((block.conv3, block.bn3))
                out = x
                for i, (conv, bn) in enumerate(convs):
                    out = self.conv_bn(out, conv, bn, "relu" if i < len(convs) - 1 else None)
                x = ops.relu(ops.add(out, identity))
        return x

    # -- EfficientNet-Lite -----------------------------------------------------------------------
    def efficientnet(self, x, m):
        from ..backbones._native import DepthwiseSeparableConv

        x = self.conv_bn(x, m.conv_stem, m.bn1, _act(m.bn1))
        for stage in m.blocks:
            for block in stage:
                if isinstance(block, DepthwiseSeparableConv):
                    out = self.conv_bn(x, block.conv_dw, block.bn1, _act(block.bn1))
                    out = self.conv_bn(out, block.conv_pw, block.bn2, _act(block.bn2))
                else:
                    out = self.conv_bn(x, block.conv_pw, block.bn1, _act(block.bn1))
                    out = self.conv_bn(out, block.conv_dw, block.bn2, _act(block.bn2))
                    out = self.conv_bn(out, block.conv_pwl, block.bn3, _act(block.bn3))
                x = self.ops.add(out, x) if block.has_skip else out
        return self.conv_bn(x, m.conv_head, m.bn2, _act(m.bn2))


def _act(bn) -> str | None:
    """The activation of a ``BatchNormAct2d``: relu6 or None."""
    return "relu6" if isinstance(bn.act, nn.ReLU6) else None
