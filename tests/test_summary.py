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


def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path, caplog):
  import json

  from absl import logging as absl_logging

  rows = [{'step': s, 'train/loss': 1.0 / s} for s in (1, 2, 3)]
  text = ''.join(json.dumps(r) + '\n' for r in rows)
  evals = [
    {
      'step': s,
      'epoch': s,
      'dev_top1_error': 50.0,
      'test': {'top1_error': 40.0},
    }
    for s in (1, 2)
  ]
  (tmp_path / 'metrics.jsonl').write_text(text + '{"step": 4, "train/lo')
  (tmp_path / 'evals.jsonl').write_text(
    ''.join(json.dumps(e) + '\n' for e in evals) + '{"step": 3, "ep'
  )
  absl_logging.get_absl_handler()  # warnings reach caplog through absl
  with caplog.at_level('WARNING'):
    got = summary.read_evals(tmp_path, start_step=10)
    writer = summary.MetricWriter(tmp_path, resume_step=10)
  writer.close()
  assert [r[0]['step'] for r in got] == [1, 2]
  assert (tmp_path / 'metrics.jsonl').read_text() == text  # torn line gone
  warned = [r.getMessage() for r in caplog.records]
  for name in ('metrics.jsonl', 'evals.jsonl'):
    assert any(name in m and 'cut short' in m for m in warned), warned


def test_a_damaged_line_before_the_last_names_the_file_and_line(tmp_path):
  path = tmp_path / 'evals.jsonl'
  path.write_text('{"step": 1}\n{"step": 2, oops}\n{"step": 3}\n')
  with pytest.raises(summary.DamagedRecordError, match=r'evals.jsonl, line 2'):
    summary.read_jsonl(path)
