"""Independent PyTorch reference for the parity tests.

Plain PyTorch (no JAX). Implements the CIFAR ResNet of the official
Longtail_DA code (akamaster style, option-A shortcuts) and one step of the
official meta stage (Jamal et al., CVPR 2020, Algorithm 1): an unrolled SGD
step on the class-weighted training loss, the gradient of the development
loss with respect to the per-example perturbations eps, and the final
weighted update of the real model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

__all__ = ['BasicBlock', 'CifarResNet', 'make_sgd', 'official_meta_step']


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection.

  Args:
      in_planes: Number of input channels.
      planes: Number of output channels.
      stride: Stride of the first convolution.
  """

  expansion = 1

  def __init__(self, in_planes: int, planes: int, stride: int = 1):
    super().__init__()
    self.conv1 = nn.Conv2d(
      in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False
    )
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(
      planes, planes, kernel_size=3, stride=1, padding=1, bias=False
    )
    self.bn2 = nn.BatchNorm2d(planes)
    # Option A: parameter-free shortcut (subsample, zero-pad channels).
    self.option_a = stride != 1 or in_planes != planes
    self.pad = planes // 4
    if self.option_a and in_planes + 2 * self.pad != planes:
      raise ValueError(
        f'option-A shortcut cannot map {in_planes} to {planes} channels'
      )

  def shortcut(self, x: torch.Tensor) -> torch.Tensor:
    """Identity, or the option-A shortcut.

    Args:
        x: Block input, NCHW.

    Returns:
        The shortcut branch, same shape as the residual branch.
    """
    if not self.option_a:
      return x
    return F.pad(
      x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), 'constant', 0
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """Applies the block.

    Args:
        x: Input, NCHW.

    Returns:
        The block output, NCHW.
    """
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
  """CIFAR ResNet (ResNet-32 by default) as in the official code.

  Args:
      stage_sizes: Number of basic blocks in each of the three stages.
      widths: Channel width of each stage.
      num_classes: Number of output logits.
  """

  def __init__(
    self, stage_sizes=(5, 5, 5), widths=(16, 32, 64), num_classes=10
  ):
    super().__init__()
    if len(stage_sizes) != 3 or len(widths) != 3:
      raise ValueError('stage_sizes and widths must have three entries')
    self.config = {
      'stage_sizes': tuple(stage_sizes),
      'widths': tuple(widths),
      'num_classes': int(num_classes),
    }
    self.in_planes = widths[0]
    self.conv1 = nn.Conv2d(
      3, widths[0], kernel_size=3, stride=1, padding=1, bias=False
    )
    self.bn1 = nn.BatchNorm2d(widths[0])
    self.layer1 = self._make_layer(widths[0], stage_sizes[0], stride=1)
    self.layer2 = self._make_layer(widths[1], stage_sizes[1], stride=2)
    self.layer3 = self._make_layer(widths[2], stage_sizes[2], stride=2)
    self.linear = nn.Linear(widths[2], num_classes)
    for m in self.modules():
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight)

  def _make_layer(
    self, planes: int, num_blocks: int, stride: int
  ) -> nn.Sequential:
    layers = []
    for s in [stride] + [1] * (num_blocks - 1):
      layers.append(BasicBlock(self.in_planes, planes, s))
      self.in_planes = planes * BasicBlock.expansion
    return nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """Computes logits.

    Args:
        x: Images, NCHW.

    Returns:
        Logits of shape [N, num_classes].
    """
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.layer3(self.layer2(self.layer1(out)))
    out = out.mean(dim=(2, 3))
    return self.linear(out)


def make_sgd(model: nn.Module, lr: float) -> torch.optim.SGD:
  """SGD of the official code (momentum 0.9, Nesterov, weight decay 5e-4).

  Args:
      model: The model whose parameters are optimised.
      lr: Learning rate.

  Returns:
      The optimizer.
  """
  return torch.optim.SGD(
    model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4
  )


def official_ce_step(model: nn.Module, optimizer, x, y) -> torch.Tensor:
  """One plain cross-entropy step in training mode (the official stage 1)."""
  model.train()
  loss = F.cross_entropy(model(x), y)
  optimizer.zero_grad()
  loss.backward()
  optimizer.step()
  return loss


def _like(x, ref: torch.Tensor, dtype=None) -> torch.Tensor:
  return torch.as_tensor(
    x, dtype=ref.dtype if dtype is None else dtype, device=ref.device
  )


def official_meta_step(
  model,
  optimizer,
  inputs,
  targets,
  dev_inputs,
  dev_targets,
  class_weights,
  inner_lr,
  eps_lr=0.01,
  reduction='sum',
):
  """One step of the official meta stage (Algorithm 1, steps 1-6).

  Args:
      model: A `CifarResNet` (its `config` is used to build the copy).
      optimizer: Optimizer over `model`'s parameters.
      inputs: Training images, NCHW.
      targets: Training labels, [B] integers.
      dev_inputs: Development images, NCHW.
      dev_targets: Development labels, integers.
      class_weights: Class-wise weights w_y, [num_classes].
      inner_lr: Step size eta of the unrolled plain-SGD step.
      eps_lr: Step size tau of the eps update.
      reduction: "sum" (official code) or "mean" for the inner loss.

  Returns:
      Dict of detached tensors: `eps` [B] (updated eps), `weights` [B]
      (w + eps), `dev_loss` (scalar, at the unrolled parameters),
      `train_loss` (scalar, the final weighted loss) and `grad_eps` [B]
      (d dev_loss / d eps at eps = 0).
  """
  if reduction not in ('sum', 'mean'):
    raise ValueError(f'unknown reduction {reduction!r}')
  ref = next(model.parameters())
  inputs = _like(inputs, ref)
  dev_inputs = _like(dev_inputs, ref)
  targets = _like(targets, ref, torch.long)
  dev_targets = _like(dev_targets, ref, torch.long)
  w = _like(class_weights, ref)[targets]

  # Fresh copy of the model, loaded from the current state every step.
  meta_model = type(model)(**model.config).to(
    device=ref.device, dtype=ref.dtype
  )
  meta_model.load_state_dict(model.state_dict())
  meta_model.train()
  names = [n for n, _ in meta_model.named_parameters()]
  params = [p for _, p in meta_model.named_parameters()]

  # Steps 1-2: inner weighted loss with eps = 0.
  cost = F.cross_entropy(meta_model(inputs), targets, reduction='none')
  eps = torch.zeros(
    cost.shape[0], dtype=ref.dtype, device=ref.device, requires_grad=True
  )
  weighted = (w + eps) * cost
  inner_loss = weighted.sum() if reduction == 'sum' else weighted.mean()

  # Step 3: one unrolled plain-SGD step, differentiable in eps.
  grads = torch.autograd.grad(inner_loss, params, create_graph=True)
  unrolled = {
    n: p - inner_lr * g for n, p, g in zip(names, params, grads, strict=True)
  }

  # Step 4: dev loss at the unrolled parameters (train-mode BatchNorm; the
  # copy's running statistics are updated and then thrown away).
  state = dict(meta_model.named_buffers())
  state.update(unrolled)
  dev_logits = functional_call(meta_model, state, (dev_inputs,))
  dev_loss = F.cross_entropy(dev_logits, dev_targets)

  # Step 5: one gradient step on eps, no clipping or normalisation.
  (grad_eps,) = torch.autograd.grad(dev_loss, eps)
  eps_new = (eps - eps_lr * grad_eps).detach()

  # Step 6: final weighted loss on the real model (updates running stats).
  model.train()
  cost_w = F.cross_entropy(model(inputs), targets, reduction='none')
  weights = w + eps_new
  loss = torch.mean(weights * cost_w)
  optimizer.zero_grad()
  loss.backward()
  optimizer.step()

  return {
    'eps': eps_new,
    'weights': weights.detach(),
    'dev_loss': dev_loss.detach(),
    'train_loss': loss.detach(),
    'grad_eps': grad_eps.detach(),
  }
