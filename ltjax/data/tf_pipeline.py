"""Host input pipeline for ImageNet-size data: tf.data in, numpy batches out.

Training (Inception-style, as the ResNet recipes of the long-tail papers):
random-resized crop with area ``(0.08, 1)`` and aspect ratio ``(3/4, 4/3)``,
resize to ``image_size``, random horizontal flip, normalize with the ImageNet
mean and std, shuffle, batch with ``drop_remainder``, prefetch. Evaluation:
resize the shorter side to ``resize_size`` (256 for ``image_size`` 224, the
same 0.875 crop ratio at other sizes: :func:`eval_resize_size`),
center-crop ``image_size``, normalize, and pad the last batch with a
``mask`` so that every image counts exactly once.

Determinism. Epoch ``e`` of a run with seed ``s`` is a function of ``(s, e)``
alone: the examples are shuffled with a seed drawn from
``SeedSequence([s, e])``, and the augmentation of the example at position
``i`` of the shuffled epoch uses the stateless seed ``(key(s, e), i)``. So the
batches do not depend on thread timing, and a run resumed with
``start_step=k`` yields exactly the batches ``k, k+1, ...`` of an
uninterrupted run.

Several hosts. Every process reads the same record stream, shuffles it the
same way and keeps the positions ``process_index::process_count`` (sharding by
example index, not by file), so the union of the hosts' batches at step ``k``
is the same set of examples for any ``process_count`` with the same global
batch. Each host reads (but does not decode) all records.

Input: a ``tf.data.Dataset`` of dicts with ``'image'`` (``uint8 [H, W, C]``, or
an encoded JPEG/PNG string, decoded here; JPEGs are decoded only inside the
crop window) and ``'label'`` in a deterministic order, e.g.
:meth:`ltjax.data.tfds_sources.TfdsSource.dataset`. Output: numpy dicts;
moving them to the devices is the trainer's job.

This module imports TensorFlow; ``ltjax`` and ``ltjax.data`` never import it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from ltjax.errors import ConfigError

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def hide_gpus_from_tf() -> None:
  """Keeps TensorFlow off the accelerators, which belong to JAX.

  Must run before TF initializes its devices; later it is a no-op.
  """
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # devices already initialized
    pass


hide_gpus_from_tf()


def normalize(image):
  """``(image - mean) / std`` with the ImageNet statistics (0..255 scale).

  Args:
    image: ``[..., 3]`` pixels in 0..255.

  Returns:
    ``[..., 3]`` float32.
  """
  image = tf.cast(image, tf.float32)
  return (image - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)


def _decode(image):
  """uint8 ``[H, W, 3]`` from uint8 ``[H, W, 1 or 3]`` or encoded bytes."""
  if image.dtype == tf.string:
    return tf.io.decode_image(image, channels=3, expand_animations=False)
  image = tf.convert_to_tensor(image)
  if image.shape[-1] == 1:
    image = tf.tile(image, [1, 1, 3])
  return image


def _crop_window(shape_hw, seed, scale, ratio):
  box = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    tf.concat([tf.cast(shape_hw, tf.int32), [3]], 0),
    bounding_boxes=box,
    seed=seed,
    min_object_covered=0.0,
    aspect_ratio_range=ratio,
    area_range=scale,
    max_attempts=10,
    use_image_if_no_bounding_boxes=True,
  )
  return begin[:2], size[:2]


def random_resized_crop(
  image, seed, image_size=224, scale=CROP_SCALE, ratio=CROP_RATIO
):
  """Inception crop: a random window of the given area and aspect ratio.

  After ``max_attempts = 10`` failed draws the whole image is used.

  Args:
    image: uint8 ``[H, W, C]`` or an encoded image (scalar string).
    seed: ``[2]`` integer stateless seed.
    image_size: side of the square output.
    scale: range of the window's area, as a fraction of the image's.
    ratio: range of the window's width / height.

  Returns:
    ``[image_size, image_size, 3]`` float32 in 0..255.
  """
  if image.dtype == tf.string:

    def jpeg():
      begin, size = _crop_window(
        tf.image.extract_jpeg_shape(image)[:2], seed, scale, ratio
      )
      return tf.image.decode_and_crop_jpeg(
        image, tf.concat([begin, size], 0), channels=3
      )

    def other():
      decoded = _decode(image)
      begin, size = _crop_window(tf.shape(decoded)[:2], seed, scale, ratio)
      return tf.slice(
        decoded, tf.concat([begin, [0]], 0), [size[0], size[1], 3]
      )

    crop = tf.cond(tf.io.is_jpeg(image), jpeg, other)
  else:
    decoded = _decode(image)
    begin, size = _crop_window(tf.shape(decoded)[:2], seed, scale, ratio)
    crop = tf.slice(decoded, tf.concat([begin, [0]], 0), [size[0], size[1], 3])
  out = tf.image.resize(crop, [image_size, image_size], method='bilinear')
  return tf.ensure_shape(out, [image_size, image_size, 3])


def train_preprocess(image, seed, image_size=224):
  """Random-resized crop, random flip, normalize: ``[S, S, 3]`` float32."""
  crop_seed, flip_seed = tf.unstack(
    tf.random.experimental.stateless_split(seed, 2)
  )
  image = random_resized_crop(image, crop_seed, image_size)
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return normalize(image)


def eval_resize_size(image_size: int) -> int:
  """The shorter side before the center crop of ``image_size``: 256 for 224.

  The ResNet evaluation protocol (torchvision's ImageNet reference:
  ``Resize(256)`` then ``CenterCrop(224)``, the transforms of the long-tail
  papers' code) crops 224/256 = 0.875 of the shorter side. Other image sizes
  keep that ratio, so the crop sees the same part of the image as at 224
  and as training's random-resized crops, which span the whole image:
  ``round(image_size / 0.875)``.
  """
  return round(image_size * 256 / 224)


def eval_preprocess(image, image_size=224, resize_size=None):
  """Shorter side to ``resize_size``, center crop, normalize.

  As torchvision's ``Resize(resize_size)`` + ``CenterCrop(image_size)``: the
  longer side becomes ``int(resize_size * long / short)``; bilinear with
  antialiasing. ``resize_size``: default :func:`eval_resize_size` of
  ``image_size`` (256 for 224).

  Returns:
    ``[image_size, image_size, 3]`` float32.
  """
  if resize_size is None:
    resize_size = eval_resize_size(image_size)
  image = _decode(image)
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  new_hw = tf.cast(resize_size * hw / tf.reduce_min(hw), tf.int32)
  new_hw = tf.maximum(new_hw, resize_size)  # float rounding of the short side
  image = tf.image.resize(image, new_hw, method='bilinear', antialias=True)
  top = tf.cast(tf.round((new_hw[0] - image_size) / 2), tf.int32)
  left = tf.cast(tf.round((new_hw[1] - image_size) / 2), tf.int32)
  image = image[top : top + image_size, left : left + image_size]
  return normalize(tf.ensure_shape(image, [image_size, image_size, 3]))


def _with_size(ds, num_examples):
  """``(ds, N)``; a given ``N`` is checked while the data is read."""
  if num_examples is not None:
    n = int(num_examples)
    return ds.apply(tf.data.experimental.assert_cardinality(n)), n
  n = int(ds.cardinality())
  if n < 0:
    raise ValueError(
      'the dataset has no known cardinality (e.g. it is filtered); pass '
      'num_examples, or apply tf.data.experimental.assert_cardinality(n).'
    )
  return ds, n


def _check_process(process_index, process_count):
  if not 0 <= process_index < process_count:
    raise ValueError(
      f'need 0 <= process_index < process_count, got {process_index} and '
      f'{process_count}.'
    )


def _options(threads):
  options = tf.data.Options()
  options.deterministic = True
  if threads:
    options.threading.private_threadpool_size = threads
  return options


def steps_per_epoch(num_examples: int, batch_size: int, process_count=1):
  """Full global batches per epoch: ``N // (batch_size * process_count)``."""
  return num_examples // (batch_size * process_count)


def epoch_seeds(seed: int, epoch: int) -> tuple[int, int]:
  """The (shuffle, augmentation) seeds of an epoch, from ``(seed, epoch)``."""
  a, b = np.random.SeedSequence([seed, epoch]).generate_state(2)
  return int(a), int(b)


def epoch_repeats(probabilities, seed: int, epoch: int) -> np.ndarray:
  """``[N]`` int counts of each example in a sampled epoch of ``N`` draws
  with replacement from ``probabilities``: one multinomial draw, a function
  of ``(seed, epoch)`` alone (every process and every resume draws the same)."""
  p = np.asarray(probabilities, np.float64)
  rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 1]))
  return rng.multinomial(len(p), p / p.sum())


def _train_epoch(
  ds,
  *,
  seed,
  epoch,
  probabilities,
  skip,
  steps,
  batch_size,
  process_index,
  process_count,
  image_size,
  shuffle_buffer,
  threads,
  prefetch,
):
  global_batch = batch_size * process_count
  shuffle_seed, aug_seed = epoch_seeds(seed, epoch)
  ds = ds.map(lambda ex: {'image': ex['image'], 'label': ex['label']})
  if probabilities is not None:
    repeats = tf.constant(epoch_repeats(probabilities, seed, epoch), tf.int64)
    ds = ds.enumerate().flat_map(
      lambda i, ex: tf.data.Dataset.from_tensors(ex).repeat(repeats[i])
    )
  ds = ds.shuffle(
    shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False
  )
  ds = ds.take(steps * global_batch).enumerate().skip(skip * global_batch)
  ds = ds.shard(process_count, process_index)

  def augment(i, ex):
    seed_i = tf.stack([tf.constant(aug_seed, tf.int64), i])
    return {
      'image': train_preprocess(ex['image'], seed_i, image_size),
      'label': tf.cast(ex['label'], tf.int32),
    }

  ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(prefetch)
  return ds.with_options(_options(threads))


def train_batches(
  ds,
  *,
  batch_size: int,
  seed: int = 0,
  num_examples: int | None = None,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  image_size: int = 224,
  shuffle_buffer: int = 16384,
  threads: int | None = None,
  prefetch: int = 2,
  probabilities=None,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless augmented training batches of this process, epoch after epoch.

  ``probabilities`` (``[N]``, e.g.
  :func:`ltjax.data.device_pipeline.sampling_probabilities`): each epoch is
  ``N`` draws with replacement instead of every example once, each example
  repeated as often as it was drawn (:func:`epoch_repeats`) before the
  shuffle buffer mixes them.

  Each epoch keeps ``steps_per_epoch(N, batch_size, process_count)`` full
  global batches (the same count on every host) and drops the rest.

  Pass encoded images (``TfdsSource.dataset(..., decode=False)``): the
  shuffle buffer then holds compressed bytes rather than decoded images, and
  JPEGs are decoded only inside the crop window.

  Resuming: ``start_step=k`` starts in epoch ``k // steps_per_epoch`` and
  skips its first ``k % steps_per_epoch`` global batches before decoding:
  those records are still read and pass through the shuffle buffer, so
  resuming late in an epoch costs up to one epoch of record reading (no
  decoding or augmentation). Earlier epochs are not touched.

  Args:
    ds: one epoch of ``{'image', 'label'}`` dicts, in a deterministic order.
    batch_size: examples per batch of this process.
    seed: run seed; epoch ``e`` depends on ``(seed, e)`` only.
    num_examples: ``N``, the size of ``ds``; default its cardinality.
    start_step: global step to start at (0 for a fresh run).
    process_index: this host, ``0 <= process_index < process_count``.
    process_count: number of hosts reading the same data.
    image_size: side of the output crops.
    shuffle_buffer: tf.data shuffle buffer (records held in host memory).
    threads: size of a private tf.data thread pool (default: shared pool).
    prefetch: batches prepared ahead.

  Yields:
    ``{'image': float32 [batch_size, S, S, 3], 'label': int32 [batch_size]}``.
  """
  _check_process(process_index, process_count)
  ds, n = _with_size(ds, num_examples)
  steps = steps_per_epoch(n, batch_size, process_count)
  if steps == 0:
    raise ConfigError(
      f'{n} examples make no full global batch of {batch_size} x '
      f'{process_count} processes.'
    )
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
  epoch, skip = divmod(start_step, steps)
  while True:
    yield from _train_epoch(
      ds,
      seed=seed,
      epoch=epoch,
      probabilities=probabilities,
      skip=skip,
      steps=steps,
      batch_size=batch_size,
      process_index=process_index,
      process_count=process_count,
      image_size=image_size,
      shuffle_buffer=shuffle_buffer,
      threads=threads,
      prefetch=prefetch,
    ).as_numpy_iterator()
    epoch, skip = epoch + 1, 0


def eval_batches(
  ds,
  *,
  batch_size: int,
  num_examples: int | None = None,
  process_index: int = 0,
  process_count: int = 1,
  image_size: int = 224,
  resize_size: int | None = None,
  threads: int | None = None,
  prefetch: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
  """One pass of evaluation batches; padding marked by ``mask``.

  Process ``p`` takes the examples at positions ``p::process_count``; every
  process yields ``ceil(ceil(N / process_count) / batch_size)`` batches (the
  same count everywhere, as collective ops need), padded with zero images,
  label 0 and ``mask`` False. Over all processes, the unmasked examples are
  the ``N`` examples of ``ds``, each once.

  Args:
    ds: ``{'image', 'label'}`` dicts, as for :func:`train_batches`.
    batch_size: examples per batch of this process.
    num_examples: ``N``; default the cardinality of ``ds``.
    process_index: this host.
    process_count: number of hosts.
    image_size: side of the center crop.
    resize_size: the shorter side is resized to this first (>= image_size);
      default :func:`eval_resize_size` of ``image_size`` (256 for 224).
    threads: private tf.data thread pool size (default: shared pool).
    prefetch: batches prepared ahead.

  Yields:
    ``{'image': float32 [B, S, S, 3], 'label': int32 [B], 'mask': bool [B]}``.
  """
  _check_process(process_index, process_count)
  if resize_size is None:
    resize_size = eval_resize_size(image_size)
  if resize_size < image_size:
    raise ConfigError(
      f'resize_size={resize_size} must be >= image_size={image_size}.'
    )
  ds, n = _with_size(ds, num_examples)
  per_process = -(-n // process_count)
  num_batches = -(-per_process // batch_size)
  mine = len(range(process_index, n, process_count))

  def prep(ex):
    return {
      'image': eval_preprocess(ex['image'], image_size, resize_size),
      'label': tf.cast(ex['label'], tf.int32),
      'mask': tf.constant(True),
    }

  ds = ds.map(lambda ex: {'image': ex['image'], 'label': ex['label']})
  ds = ds.shard(process_count, process_index)
  ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE)
  pad = {
    'image': tf.zeros([image_size, image_size, 3], tf.float32),
    'label': tf.constant(0, tf.int32),
    'mask': tf.constant(False),
  }
  pad = tf.data.Dataset.from_tensors(pad).repeat(
    num_batches * batch_size - mine
  )
  ds = ds.concatenate(pad).batch(batch_size, drop_remainder=True)
  ds = ds.prefetch(prefetch).with_options(_options(threads))
  return ds.as_numpy_iterator()
