"""Flax ResNets: the official CIFAR ResNet-32 and ImageNet-style ResNets."""

from ltjax.models.cifar_resnet import CifarResNet as CifarResNet
from ltjax.models.cifar_resnet import ResNet32 as ResNet32
from ltjax.models.cifar_resnet import TinyResNet as TinyResNet
from ltjax.models.conv import Conv as Conv
from ltjax.models.conv import conv2d as conv2d
from ltjax.models.conv import (
  xla_cpu_compiler_options as xla_cpu_compiler_options,
)
from ltjax.models.functional import make_loss_fn as make_loss_fn
from ltjax.models.functional import scaled_logits as scaled_logits
from ltjax.models.layers import BatchNorm as BatchNorm
from ltjax.models.layers import CosineHead as CosineHead
from ltjax.models.registry import COMPUTE_DTYPES as COMPUTE_DTYPES
from ltjax.models.registry import MODELS as MODELS
from ltjax.models.registry import create_model as create_model
from ltjax.models.resnet import ResNet as ResNet
from ltjax.models.resnet import ResNet10 as ResNet10
from ltjax.models.resnet import ResNet50 as ResNet50
from ltjax.models.resnet import ResNet152 as ResNet152
from ltjax.models.torch_import import convert_resnet as convert_resnet
from ltjax.models.torch_import import read_state_dict as read_state_dict
