"""torchrun sharding of ``segkit predict`` inputs, in the library (``Shard``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.prediction.writer import Shard


def test_shard_from_the_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert Shard.from_environment() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert Shard.from_environment() is None
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    shard = Shard.from_environment()
    assert shard == Shard(rank=2, world_size=3, local_rank=0)
    items = list(range(10))
    shares = [Shard(rank, 3, rank).take(items) for rank in range(3)]
    assert sorted(sum(shares, [])) == items and [len(share) for share in shares] == [4, 3, 3]
    assert shard.take(items) == [2, 5, 8]
    assert shard.device("cpu") == "cpu" and shard.device("cuda:1") == "cuda:1"
    assert shard.device("auto") in ("cuda:0", "cpu")


def test_globs_end_at_symbolic_link_loops(tmp_path: Path) -> None:
    from segkit.prediction.writer import expand_inputs

    (tmp_path / "g" / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "g" / "sub" / "a.png")
    (tmp_path / "g" / "sub" / "loop").symlink_to(tmp_path / "g", target_is_directory=True)
    assert expand_inputs([str(tmp_path / "g" / "**" / "*.png")]) == [tmp_path / "g" / "sub" / "a.png"]
