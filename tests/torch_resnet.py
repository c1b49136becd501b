"""torchvision's ImageNet ResNet in plain ``torch.nn``, for tests.

The same modules, names, strides (v1.5: the stride on the bottleneck's 3x3)
and ``state_dict`` keys as ``torchvision.models.resnet.ResNet``, written
here because the torchvision wheels on the package index are built against
CUDA PyTorch and do not load beside the CPU build the tests install. The
tests use real torchvision where it imports.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin, cout, k, stride=1):
  return nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, cin, width, stride=1, downsample=None):
    super().__init__()
    self.conv1 = _conv(cin, width, 3, stride)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = _conv(width, width, 3)
    self.bn2 = nn.BatchNorm2d(width)
    self.downsample = downsample

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin, width, stride=1, downsample=None):
    super().__init__()
    self.conv1 = _conv(cin, width, 1)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = _conv(width, width, 3, stride)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = _conv(width, width * 4, 1)
    self.bn3 = nn.BatchNorm2d(width * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
  def __init__(self, block, layers, num_classes=1000):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = 64
    for i, (n, width) in enumerate(
      zip(layers, (64, 128, 256, 512), strict=True)
    ):
      stride = 1 if i == 0 else 2
      blocks = []
      for j in range(n):
        s = stride if j == 0 else 1
        down = None
        if s != 1 or cin != width * block.expansion:
          down = nn.Sequential(
            _conv(cin, width * block.expansion, 1, s),
            nn.BatchNorm2d(width * block.expansion),
          )
        blocks.append(block(cin, width, s, down))
        cin = width * block.expansion
      setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for i in range(4):
      x = getattr(self, f'layer{i + 1}')(x)
    return self.fc(torch.flatten(self.avgpool(x), 1))


ARCHS = {
  'resnet10': (BasicBlock, [1, 1, 1, 1]),
  'resnet18': (BasicBlock, [2, 2, 2, 2]),
  'resnet50': (Bottleneck, [3, 4, 6, 3]),
  'resnet152': (Bottleneck, [3, 8, 36, 3]),
}


def resnet(name: str, num_classes: int = 1000) -> nn.Module:
  """torchvision's ``name`` (real torchvision where it imports)."""
  try:
    import torchvision  # noqa: PLC0415

    if name != 'resnet10':
      return getattr(torchvision.models, name)(num_classes=num_classes)
  except Exception:  # not installed, or built for another PyTorch
    pass
  block, layers = ARCHS[name]
  return ResNet(block, layers, num_classes)
