"""Pretrained starts: torchvision ResNet state_dicts into ltjax's ResNets."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from ltjax import config_check, config_lib, devices, models, train, train_step  # noqa: E402
from ltjax.models import torch_import  # noqa: E402
from tests import torch_resnet  # noqa: E402


def randomize(net, seed=0):
  """Random weights and BatchNorm statistics, so that each one shows."""
  g = torch.Generator().manual_seed(seed)
  for m in net.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.weight.data = 0.5 + torch.rand(m.weight.shape, generator=g)
      m.bias.data = 0.2 * torch.randn(m.bias.shape, generator=g)
      m.running_mean = 0.2 * torch.randn(m.running_mean.shape, generator=g)
      m.running_var = 0.5 + torch.rand(m.running_var.shape, generator=g)
  return net.eval()


def save(net, path):
  torch.save(net.state_dict(), path)
  return str(path)


def template(model, size=64):
  return jax.eval_shape(
    functools.partial(model.init, train=False),
    jax.random.key(0),
    jnp.zeros((1, size, size, 3)),
  )


def test_resnet50_logits_match_torchvision_at_224(tmp_path):
  net = randomize(torch_resnet.resnet('resnet50', num_classes=1000))
  x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    want = net(x).numpy()
  model = models.ResNet50(num_classes=1000)
  state_dict = models.read_state_dict(save(net, tmp_path / 'r50.pth'))
  variables, fresh = models.convert_resnet(state_dict, template(model))
  assert not fresh
  got = jax.jit(functools.partial(model.apply, train=False))(
    variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
  )
  rel = np.abs(np.asarray(got) - want).max() / np.abs(want).max()
  assert rel < 1e-4, rel
  # The running statistics carried over as they were (not re-estimated).
  np.testing.assert_array_equal(
    variables['batch_stats']['layer3_5']['bn2']['var'],
    net.layer3[5].bn2.running_var.numpy(),
  )
  np.testing.assert_array_equal(
    variables['batch_stats']['bn1']['mean'], net.bn1.running_mean.numpy()
  )


def test_head_is_fresh_when_the_class_count_differs(tmp_path):
  net = randomize(torch_resnet.resnet('resnet10', num_classes=1000))
  path = save(net, tmp_path / 'r10.pth')
  model = models.ResNet10(num_classes=7)
  variables, fresh = models.convert_resnet(
    models.read_state_dict(path), template(model)
  )
  assert fresh and 'fc' not in variables['params']
  # Through the trainer's init: the body is the file's, the head fresh.
  config = config_lib.base_config(
    'npz', 'ce', model='resnet10', batch_size=4, num_epochs=2,
    stage2_epoch=1, learning_rate=0.1, lr_boundaries=(1,), lr_decay=0.1,
    weight_decay=5e-4,
  )  # fmt: skip
  config.init_from = path
  pretrained = train.load_pretrained(config, model)
  state = train_step.init_state(
    model, config, 7, (32, 32, 3), 3, jax.random.key(0), pretrained
  )
  fresh_state = train_step.init_state(
    model, config, 7, (32, 32, 3), 3, jax.random.key(0)
  )
  np.testing.assert_array_equal(
    state.params['layer2_0']['conv1']['kernel'],
    net.layer2[0].conv1.weight.detach().numpy().transpose(2, 3, 1, 0),
  )
  np.testing.assert_array_equal(
    state.batch_stats['layer4_0']['downsample_bn']['var'],
    net.layer4[0].downsample[1].running_var.numpy(),
  )
  np.testing.assert_array_equal(
    state.params['fc']['kernel'], fresh_state.params['fc']['kernel']
  )
  assert state.params['fc']['kernel'].shape == (512, 7)


def test_vmapped_seeds_share_the_pretrained_body(tmp_path):
  net = randomize(torch_resnet.resnet('resnet10', num_classes=5))
  config = config_lib.base_config(
    'npz', 'ce', model='resnet10', batch_size=4, num_epochs=2,
    stage2_epoch=1, learning_rate=0.1, lr_boundaries=(1,), lr_decay=0.1,
    weight_decay=5e-4,
  )  # fmt: skip
  config.init_from, config.num_seeds = save(net, tmp_path / 'r10.pth'), 2
  model = models.ResNet10(num_classes=5)
  data = types.SimpleNamespace(
    num_classes=5, image_shape=(32, 32, 3), steps_per_epoch=3
  )
  init = train.make_init_fn(config, model, data, devices.make_mesh())
  pretrained = train.load_pretrained(config, model)
  state = init(train.seed_keys(config)[0], pretrained)
  head = state.params['fc']['kernel']  # the file's: 5 classes fit
  want = net.fc.weight.detach().numpy().T
  np.testing.assert_array_equal(head[0], want)
  np.testing.assert_array_equal(head[1], want)


def test_error_shapes_are_in_torch_layout():
  # Non-square on every axis, so a wrong inverse permutation shows.
  for shape in [(8, 3, 5, 7), (10, 4), (6,)]:
    flax_shape = torch_import._to_flax(np.empty(shape)).shape
    assert torch_import._to_torch_shape(flax_shape) == shape


@pytest.mark.parametrize(
  'source, model, match',
  [
    # A deeper file than the model: an extra block, in the file's order.
    ('resnet18', models.ResNet10, r'layer1\.1\.bn1\.bias .*in the file, not'),
    # Basic blocks into bottlenecks: the first layer whose shape differs.
    (
      'resnet10',
      models.ResNet50,
      r'layer1\.0\.conv1\.weight: \(64, 64, 3, 3\) in the file, '
      r'\(64, 64, 1, 1\) in the model',
    ),
  ],
)
def test_mismatched_architecture_names_the_first_differing_layer(
  source, model, match
):
  state_dict = {
    k: v.numpy()
    for k, v in torch_resnet.resnet(source).state_dict().items()
    if 'num_batches' not in k
  }
  with pytest.raises(ValueError, match=match):
    models.convert_resnet(state_dict, template(model(num_classes=1000)))


def test_shallower_file_names_the_first_missing_layer():
  # ResNet-50's keys all exist in ResNet-152; its block layer2.4 does not.
  t = template(models.ResNet152(num_classes=10), size=32)
  shapes = {torch_import.torch_key(p): s.shape for p, s in _flat(t).items()}
  state_dict = {
    k: np.zeros(tuple(v.shape), np.float32)
    for k, v in torch_resnet.resnet('resnet50', num_classes=10)
    .state_dict()
    .items()
    if 'num_batches' not in k
  }
  assert all(k in shapes for k in state_dict)
  with pytest.raises(ValueError, match=r'layer2\.4\.bn1\.bias: in the model'):
    models.convert_resnet(state_dict, t, model_name='resnet152')


def _flat(tree):
  from flax import traverse_util  # noqa: PLC0415

  return traverse_util.flatten_dict(tree)


def test_read_state_dict_unwraps_checkpoints(tmp_path):
  net = torch_resnet.resnet('resnet10', num_classes=3)
  wrapped = {
    'state_dict': {f'module.{k}': v for k, v in net.state_dict().items()}
  }
  torch.save(wrapped, tmp_path / 'ckpt.pth')
  got = models.read_state_dict(str(tmp_path / 'ckpt.pth'))
  assert set(got) == {
    k for k in net.state_dict() if not k.endswith('num_batches_tracked')
  }
  np.testing.assert_array_equal(got['fc.bias'], net.fc.bias.detach().numpy())
  torch.save([1, 2], tmp_path / 'list.pth')
  with pytest.raises(ValueError, match='holds no state_dict'):
    models.read_state_dict(str(tmp_path / 'list.pth'))
  with pytest.raises(FileNotFoundError, match='no file'):
    models.read_state_dict(str(tmp_path / 'missing.pth'))


@pytest.mark.parametrize(
  'model, init_from, match',
  [
    ('resnet32', 'EXISTS', r'fit config.model .*not .resnet32'),
    ('resnet10', 'missing.pth', 'no file'),
    ('resnet10', None, 'required by this config'),
  ],
)
def test_config_check_refuses_bad_init_from(tmp_path, model, init_from, match):
  config = config_lib.base_config(
    'npz', 'ce', model=model, batch_size=4, num_epochs=2, stage2_epoch=1,
    learning_rate=0.1, lr_boundaries=(1,), lr_decay=0.1, weight_decay=5e-4,
  )  # fmt: skip
  (tmp_path / 'w.pth').write_bytes(b'')
  if init_from is not None:
    init_from = str(tmp_path / {'EXISTS': 'w.pth'}.get(init_from, init_from))
  config.init_from = init_from
  with pytest.raises(config_check.ConfigError, match=match):
    config_check.check(config)
