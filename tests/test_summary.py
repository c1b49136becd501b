"""Event files written with tensorboardX, read back with TensorFlow."""

import os
import time

import pytest

from ltjax import summary


def _event_files(tmp_path, tf):
  """``[[Event, ...] per event file]``, the files in name order."""
  logdir = tmp_path / 'tensorboard'
  return [
    [
      tf.compat.v1.Event.FromString(r.numpy())
      for r in tf.data.TFRecordDataset(str(logdir / name))
    ]
    for name in sorted(os.listdir(logdir))
  ]


def _scalars(events):
  return [
    (e.step, v.tag, v.simple_value) for e in events for v in e.summary.value
  ]


def _assert_jsonl_rows_in_events(tmp_path, events):
  got = _scalars(events)
  for row in summary.read_jsonl(tmp_path / 'metrics.jsonl'):
    for tag, value in row.items():
      if tag != 'step':
        assert (row['step'], tag, pytest.approx(value, rel=1e-6)) in got


def test_event_file_reads_back_in_tensorflow(tmp_path):
  tf = pytest.importorskip('tensorflow')
  writer = summary.MetricWriter(tmp_path)
  writer.write(3, {'train/loss': 1.5, 'lr': 0.1})
  writer.write(7, {'train/loss': 0.25})
  writer.close()
  (events,) = _event_files(tmp_path, tf)
  assert events[0].file_version == 'brain.Event:2'
  assert _scalars(events[1:]) == [
    (3, 'train/loss', 1.5),
    (3, 'lr', pytest.approx(0.1)),
    (7, 'train/loss', 0.25),
  ]
  assert summary.read_jsonl(tmp_path / 'metrics.jsonl')[1] == {
    'step': 7, 'train/loss': 0.25,
  }  # fmt: skip
  _assert_jsonl_rows_in_events(tmp_path, events)


def test_resume_drops_records_after_the_checkpoint(tmp_path):
  writer = summary.MetricWriter(tmp_path)
  for step in (1, 2, 3, 4):
    writer.write(step, {'x': step})
  writer.close()
  writer = summary.MetricWriter(tmp_path, resume_step=2)
  writer.write(3, {'x': 30})
  writer.close()
  rows = summary.read_jsonl(tmp_path / 'metrics.jsonl')
  assert [(r['step'], r['x']) for r in rows] == [(1, 1), (2, 2), (3, 30)]


def test_resumed_writer_keeps_earlier_events(tmp_path):
  tf = pytest.importorskip('tensorflow')
  writer = summary.MetricWriter(tmp_path)
  for step in (1, 2, 3, 4):
    writer.write(step, {'train/loss': 1 / step, 'learning_rate': 0.1 * step})
  writer.close()
  # Opened within the same second as the first writer's file, as a quick
  # resume (or this test) does: the first file must not be overwritten.
  writer = summary.MetricWriter(tmp_path, resume_step=2)
  writer.write(3, {'train/loss': 0.3, 'learning_rate': 0.3})
  writer.write(5, {'train/loss': 0.2, 'learning_rate': 0.5})
  writer.close()
  first, second = _event_files(tmp_path, tf)
  assert [e.step for e in first[1:]] == [1, 1, 2, 2, 3, 3, 4, 4]
  assert [e.step for e in second[1:]] == [3, 3, 5, 5]
  rows = summary.read_jsonl(tmp_path / 'metrics.jsonl')
  assert [r['step'] for r in rows] == [1, 2, 3, 5]
  _assert_jsonl_rows_in_events(tmp_path, first + second)


def test_events_reach_the_file_without_close(tmp_path):
  # A killed run never calls close(): what it wrote must be on disk soon.
  tf = pytest.importorskip('tensorflow')
  writer = summary.MetricWriter(tmp_path)
  writer.write(1, {'train/loss': 2.5})
  try:
    deadline = time.monotonic() + 30
    while True:
      (events,) = _event_files(tmp_path, tf)
      if _scalars(events) or time.monotonic() > deadline:
        break
      time.sleep(0.05)
    assert _scalars(events) == [(1, 'train/loss', 2.5)]
  finally:
    writer.close()
