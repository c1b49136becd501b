"""Event files written without TensorFlow, read back with TensorFlow."""

import os

import pytest

from ltjax import summary


def test_crc32c_known_vectors():
  # RFC 3720 (iSCSI) test vectors for CRC-32C.
  assert summary.crc32c(b'') == 0
  assert summary.crc32c(b'123456789') == 0xE3069283
  assert summary.crc32c(bytes(32)) == 0x8A9136AA


def test_event_file_reads_back_in_tensorflow(tmp_path):
  tf = pytest.importorskip('tensorflow')
  writer = summary.MetricWriter(tmp_path)
  writer.write(3, {'train/loss': 1.5, 'lr': 0.1})
  writer.write(7, {'train/loss': 0.25})
  writer.close()
  (name,) = os.listdir(tmp_path / 'tensorboard')
  events = [
    tf.compat.v1.Event.FromString(r.numpy())
    for r in tf.data.TFRecordDataset(str(tmp_path / 'tensorboard' / name))
  ]
  assert events[0].file_version == 'brain.Event:2'
  got = [
    (e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value
  ]
  assert got == [
    (3, 'train/loss', 1.5),
    (3, 'lr', pytest.approx(0.1)),
    (7, 'train/loss', 0.25),
  ]
  assert summary.read_jsonl(tmp_path / 'metrics.jsonl')[1] == {
    'step': 7, 'train/loss': 0.25,
  }  # fmt: skip


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
