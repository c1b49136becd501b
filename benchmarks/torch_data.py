"""The official code's CIFAR training data pipeline, in PyTorch and PIL.

As the official ``data_utils.py`` (github.com/abdullahjamal/Longtail_DA):
each uint8 HWC image becomes a PIL image and goes through ``ToTensor``,
reflect pad 4, ``ToPILImage``, ``RandomCrop(32)``, ``RandomHorizontalFlip``,
``ToTensor`` and ``Normalize``, written here with PIL and torch (the same
operations as torchvision's). ``benchmarks/epoch.py`` times it; a test checks
that it equals ltjax's augmentation for the same random draws.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ltjax.data.augment import CIFAR_MEAN, CIFAR_STD

try:
  from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # ltjax-only benchmark runs need no PyTorch
  _TorchDataset = object

PAD = 4


def to_tensor(pic):
  """torchvision ``ToTensor`` of an RGB PIL image: float CHW in [0, 1]."""
  import torch

  x = torch.from_numpy(np.array(pic, np.uint8, copy=True))
  x = x.view(pic.size[1], pic.size[0], 3).permute(2, 0, 1).contiguous()
  return x.to(torch.get_default_dtype()).div(255)


def to_pil_image(x):
  """torchvision ``ToPILImage`` of a float CHW tensor (``mul(255).byte()``)."""
  return Image.fromarray(np.transpose(x.mul(255).byte().numpy(), (1, 2, 0)))


def official_transform(img, size):
  """The official training transform of one PIL image (``data_utils.py``)."""
  import torch
  import torch.nn.functional as F

  x = to_tensor(img)
  x = F.pad(x.unsqueeze(0), (PAD,) * 4, mode='reflect').squeeze()
  img = to_pil_image(x)
  h, w = img.size[1], img.size[0]  # RandomCrop(size), torchvision's draws
  i = torch.randint(0, h - size + 1, size=(1,)).item()
  j = torch.randint(0, w - size + 1, size=(1,)).item()
  img = img.crop((j, i, j + size, i + size))
  if torch.rand(1) < 0.5:  # RandomHorizontalFlip
    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  mean = torch.as_tensor(CIFAR_MEAN)[:, None, None]
  std = torch.as_tensor(CIFAR_STD)[:, None, None]
  return to_tensor(img).sub_(mean).div_(std)


class ArrayDataset(_TorchDataset):
  """uint8 ``[N, H, W, 3]`` images and labels, as torchvision's CIFAR10."""

  def __init__(self, image, label):
    self.image, self.label = image, label

  def __len__(self):
    return len(self.label)

  def __getitem__(self, index):
    img = Image.fromarray(self.image[index])
    return official_transform(img, self.image.shape[1]), int(self.label[index])
