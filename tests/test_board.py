"""TensorBoard events for training runs (stylekit.train.board): no Ray, a plain folder as "remote"."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from stylekit.train import board as board_module
from stylekit.train.board import Board, upload_folder


def read_events(folder: Path) -> list[event_pb2.Event]:
    """Every event in the folder's event files (TFRecord framing: length, crc, data, crc)."""
    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            events.append(event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length]))
            pos += 12 + length + 4
    return events


def tags(events: list[event_pb2.Event]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for e in events:
        for v in e.summary.value:
            found.setdefault(v.tag, []).append(e.step)
    return found


def test_events_go_to_the_local_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "wave"
    board = Board(str(run_dir))
    assert board.local_dir == str(run_dir / "tensorboard") and not board.remote
    for step in (1, 2):
        board.log_scalars(step, {"loss/total": 3.0 / step, "loss/content": 1.0, "images_per_second": 8.5})
    board.log_image(2, "preview", np.full((12, 20, 3), 128, np.uint8))
    board.close()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    found = tags(read_events(run_dir / "tensorboard"))
    assert found["loss/total"] == [1, 2] and found["images_per_second"] == [1, 2]
    assert found["preview"] == [2]
    image = next(
        v.image for e in read_events(run_dir / "tensorboard") for v in e.summary.value if v.HasField("image")
    )
    assert (image.height, image.width, image.colorspace) == (12, 20, 3)


def test_a_resumed_run_adds_an_event_file_to_the_same_folder(tmp_path: Path) -> None:
    first = Board(str(tmp_path))
    first.log_scalars(1, {"loss/total": 1.0})
    first.close()
    resumed = Board(str(tmp_path), purge_step=2)
    resumed.log_scalars(2, {"loss/total": 0.5})
    resumed.close()
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) >= 2
    assert sorted(tags(read_events(tmp_path / "tensorboard"))["loss/total"]) == [1, 2]


def test_sync_copies_event_files_to_the_remote_folder(tmp_path: Path) -> None:
    local, remote_run = tmp_path / "local", tmp_path / "remote-run"
    board = Board(str(remote_run), local_dir=str(local))
    assert board.remote
    board.log_scalars(1, {"loss/total": 1.0})
    board.sync()
    (event_file,) = local.glob("events.out.tfevents.*")
    copied = remote_run / "tensorboard" / event_file.name
    assert copied.read_bytes() == event_file.read_bytes()
    size = copied.stat().st_size
    board.log_scalars(2, {"loss/total": 0.5})
    board.close()  # uploads what is new
    assert copied.stat().st_size > size and copied.read_bytes() == event_file.read_bytes()
    assert tags(read_events(remote_run / "tensorboard"))["loss/total"] == [1, 2]
    assert local.is_dir()  # a folder we were given is not ours to delete


def test_upload_folder_skips_unchanged_files(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_bytes(b"one")
    (src / "sub" / "b").write_bytes(b"two")
    done = upload_folder(str(src), str(dst))
    assert (dst / "a").read_bytes() == b"one" and (dst / "sub" / "b").read_bytes() == b"two"
    (dst / "a").write_bytes(b"changed remotely")
    done = upload_folder(str(src), str(dst), done=done)
    assert (dst / "a").read_bytes() == b"changed remotely"  # unchanged locally: not copied again
    (src / "a").write_bytes(b"one, grown")
    upload_folder(str(src), str(dst), done=done)
    assert (dst / "a").read_bytes() == b"one, grown"


def test_a_remote_run_writes_to_a_temporary_folder_removed_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uploads: list[tuple[str, list[str]]] = []

    def fake_upload(local_dir, target, options, done=None):
        uploads.append((target, sorted(p.name for p in Path(local_dir).iterdir())))
        return dict(done or {})

    monkeypatch.setattr(board_module, "upload_folder", fake_upload)
    from stylekit.files.storage import StorageOptions

    opts = StorageOptions("http://127.0.0.1:9", "us-east-1")  # never contacted
    board = Board("s3://bucket/runs/wave", opts)
    local = Path(board.local_dir)
    assert board.remote and local.is_dir() and local != tmp_path
    board.log_scalars(1, {"loss/total": 1.0})
    board.sync()
    board.close()
    assert uploads and all(t == "s3://bucket/runs/wave/tensorboard" for t, _ in uploads)
    assert any(n.startswith("events.out.tfevents.") for n in uploads[-1][1])
    assert not local.exists()


def test_a_failed_upload_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args, **kwargs):
        raise OSError("bucket gone")

    monkeypatch.setattr(board_module, "upload_folder", broken)
    board = Board(str(tmp_path / "remote"), local_dir=str(tmp_path / "local"))
    board.log_scalars(1, {"loss/total": 1.0})
    with caplog.at_level(logging.WARNING):
        board.sync()
        board.close()
    assert "bucket gone" in caplog.text


@pytest.mark.s3
def test_events_reach_an_s3_run_folder(s3_server: str) -> None:
    import boto3

    from conftest import make_bucket
    from stylekit.files.storage import StorageOptions

    make_bucket("board-bucket")
    board = Board("s3://board-bucket/runs/wave", StorageOptions(s3_server))
    local = Path(board.local_dir)
    board.log_scalars(1, {"loss/total": 1.0})
    board.log_image(1, "preview", np.zeros((8, 8, 3), np.uint8))
    board.close()
    listing = boto3.client("s3").list_objects_v2(Bucket="board-bucket", Prefix="runs/wave/tensorboard/")
    keys = [o["Key"] for o in listing.get("Contents", ())]
    assert len(keys) == 1 and keys[0].startswith("runs/wave/tensorboard/events.out.tfevents.")
    assert not local.exists()
