"""The models a config can name (``config.model``) and their compute dtypes."""

from __future__ import annotations

import jax.numpy as jnp

from ltjax.errors import ConfigError
from ltjax.models.cifar_resnet import ResNet32, TinyResNet
from ltjax.models.resnet import ResNet10, ResNet50, ResNet152

COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

MODELS = {
  'tiny': TinyResNet,
  'resnet32': ResNet32,
  'resnet10': ResNet10,
  'resnet50': ResNet50,
  'resnet152': ResNet152,
}
# The models a torchvision ResNet state_dict converts into (config.init_from).
TORCHVISION_LAYOUT = ('resnet10', 'resnet50', 'resnet152')


def check_model(name: str) -> None:
  if name not in MODELS:
    raise ConfigError(
      f'unknown model {name!r} (config.model); choose one of {sorted(MODELS)}.'
    )


def create_model(
  name: str,
  num_classes: int,
  *,
  cosine_head: bool = False,
  compute_dtype: str = 'float32',
):
  """The Flax classifier ``name`` of :data:`MODELS`.

  Args:
    name: a key of :data:`MODELS`.
    num_classes: outputs of the head.
    cosine_head: a normalized (cosine) linear head, as LDAM uses.
    compute_dtype: a key of :data:`COMPUTE_DTYPES`; parameters stay float32.
  """
  check_model(name)
  return MODELS[name](
    num_classes=num_classes,
    cosine_head=cosine_head,
    dtype=COMPUTE_DTYPES[compute_dtype],
  )
