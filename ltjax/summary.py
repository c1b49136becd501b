"""Scalars to a JSON-lines file and to TensorBoard event files.

The event files are written directly (TFRecord framing of ``Event`` protocol
buffers with scalar summaries), so logging needs neither TensorFlow nor
TensorBoard installed; ``tensorboard --logdir=WORKDIR`` reads them.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time


def _crc32c_table():
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)
  return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), the checksum of TFRecord framing."""
  crc = 0xFFFFFFFF
  for b in data:
    crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    bits = n & 0x7F
    n >>= 7
    out.append(bits | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
  return _varint((number << 3) | wire_type) + payload


def _bytes_field(number: int, data: bytes) -> bytes:
  return _field(number, 2, _varint(len(data)) + data)


def _event(wall_time: float, step: int, *, summary=b'', version='') -> bytes:
  out = _field(1, 1, struct.pack('<d', wall_time))  # double wall_time = 1
  out += _field(2, 0, _varint(step))  # int64 step = 2
  if version:
    out += _bytes_field(3, version.encode())  # string file_version = 3
  if summary:
    out += _bytes_field(5, summary)  # Summary summary = 5
  return out


def _scalar_summary(tag: str, value: float) -> bytes:
  # Summary { repeated Value value = 1 }; Value { tag = 1; simple_value = 2 }.
  value_msg = _bytes_field(1, tag.encode()) + _field(
    2, 5, struct.pack('<f', value)
  )
  return _bytes_field(1, value_msg)


class EventFileWriter:
  """Appends scalar events to ``logdir/events.out.tfevents.*``."""

  def __init__(self, logdir):
    os.makedirs(logdir, exist_ok=True)
    name = f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}'
    self._file = open(os.path.join(logdir, name), 'ab')  # noqa: SIM115
    self._write(_event(time.time(), 0, version='brain.Event:2'))

  def _write(self, record: bytes) -> None:
    header = struct.pack('<Q', len(record))
    self._file.write(header + struct.pack('<I', _masked_crc(header)))
    self._file.write(record + struct.pack('<I', _masked_crc(record)))

  def scalars(self, step: int, scalars: dict[str, float]) -> None:
    summary = b''.join(_scalar_summary(k, float(v)) for k, v in scalars.items())
    self._write(_event(time.time(), int(step), summary=summary))
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class MetricWriter:
  """Writes scalars to ``workdir/metrics.jsonl`` and TensorBoard events.

  Only process 0 should create one. A resumed run appends; records of steps
  after the restored checkpoint are dropped first, so the file describes
  one uninterrupted run.
  """

  def __init__(self, workdir, resume_step: int = 0):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    if os.path.exists(self.path):
      with open(self.path) as f:
        keep = [
          r for r in f if r.strip() and json.loads(r)['step'] <= resume_step
        ]
      with open(self.path + '.tmp', 'w') as f:
        f.writelines(keep)
      os.replace(self.path + '.tmp', self.path)
    self._jsonl = open(self.path, 'a')  # noqa: SIM115
    self._events = EventFileWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({'step': int(step), **scalars}) + '\n')
    self._jsonl.flush()
    self._events.scalars(step, scalars)

  def close(self) -> None:
    self._jsonl.close()
    self._events.close()


def read_jsonl(path) -> list[dict]:
  with open(path) as f:
    return [json.loads(r) for r in f if r.strip()]
