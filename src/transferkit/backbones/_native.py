"""Plain-PyTorch ResNet and EfficientNet-Lite0, state_dict-compatible with torchvision and timm.

Building a module through torchvision or timm costs ~2 s of imports (``torchvision.ops``
imports ``torch._dynamo``; timm imports torchvision), paid by a cold ``transferkit embed``
before its first image, so the two flagship backbones are defined here with nothing but ``torch.nn``:

- :class:`ResNet` has torchvision's ``resnet18/34/50`` layout and parameter names
  (``conv1``, ``bn1``, ``layer1.0.conv1`` ..., ``fc``), so torchvision's checkpoints load
  strictly and a run saved with either implementation loads into the other;
- :class:`EfficientNetLite` has timm's ``tf_efficientnet_lite0`` layout and names
  (``conv_stem``, ``bn1``, ``blocks.<stage>.<block>.conv_pw`` ..., ``conv_head``, ``bn2``),
  including TensorFlow's asymmetric "same" padding of the stride-2 convolutions.

``tests/unit/test_native_backbones.py`` checks both against the library implementations:
identical state_dict keys and shapes, identical outputs for the same weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

# -- ResNet (torchvision layout) -------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet "v1.5" bottleneck (stride on the 3x3 convolution), as torchvision."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet without its classifier (``fc`` is an ``Identity``): images -> ``(B, C)``."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int]):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Identity()
        self.num_features = 512 * block.expansion
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


RESNETS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6, 3)), "resnet50": (Bottleneck, (3, 4, 6, 3))}


def resnet(name: str) -> ResNet:
    """``resnet18``, ``resnet34`` or ``resnet50`` with random weights."""
    block, layers = RESNETS[name]
    return ResNet(block, layers)


# -- EfficientNet-Lite0 (timm tf_efficientnet_lite0 layout) ------------------------------------------


class Conv2dSame(nn.Conv2d):
    """A convolution with TensorFlow's "same" padding: ``ceil(in / stride)`` outputs, the odd pixel padded at the end."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        pad_h = _same_pad(ih, self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = _same_pad(iw, self.kernel_size[1], self.stride[1], self.dilation[1])
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride == 1:  # "same" padding is symmetric and static at stride 1
        return nn.Conv2d(cin, cout, kernel, 1, kernel // 2, groups=groups, bias=False)
    return Conv2dSame(cin, cout, kernel, stride, 0, groups=groups, bias=False)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by an activation (ReLU6 or none); parameter names of a plain BatchNorm2d, as timm."""

    def __init__(self, channels: int, act: bool = True):
        super().__init__(channels, eps=1e-3)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = _conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin)
        self.conv_pw = _conv(cin, cout, 1)
        self.bn2 = BatchNormAct2d(cout, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return out + x if self.has_skip else out


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = _conv(cin, mid, 1)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = _conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid)
        self.conv_pwl = _conv(mid, cout, 1)
        self.bn3 = BatchNormAct2d(cout, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.has_skip else out


#: EfficientNet-Lite0 stages: (repeats, kernel, first stride, expansion, output channels).
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


class EfficientNetLite(nn.Module):
    """timm's ``tf_efficientnet_lite0`` without its classifier: images -> ``(B, 1280)``.

    Lite variants drop squeeze-and-excitation, use ReLU6 and keep a 32-channel stem and a
    1280-channel head; "tf" means TensorFlow's "same" padding and BatchNorm eps 1e-3.
    """

    def __init__(self, stages=LITE0_STAGES, stem: int = 32, head: int = 1280):
        super().__init__()
        self.conv_stem = _conv(3, stem, 3, 2)
        self.bn1 = BatchNormAct2d(stem)
        blocks, cin = [], stem
        for repeats, kernel, stride, expand, cout in stages:
            stage = []
            for i in range(repeats):
                s = stride if i == 0 else 1
                stage.append(DepthwiseSeparableConv(cin, cout, kernel, s) if expand == 1 else
                             InvertedResidual(cin, cout, kernel, s, expand))
                cin = cout
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = _conv(cin, head, 1)
        self.bn2 = BatchNormAct2d(head)
        self.num_features = head
        for m in self.modules():  # timm's EfficientNet initialisation (fan-out normal, unit BatchNorm)
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)
