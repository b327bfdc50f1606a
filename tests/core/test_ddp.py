"""The pieces of data-parallel fine-tuning that need no second process: the parts of a batch, one process's
ranks, the batch size per process, and the devices refused under torchrun (the runs themselves are in
tests/cli/test_cli_finetune_ddp.py)."""

import numpy as np
import pytest
import torch
from torch import nn

from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.pair_config import PairConfig
from napari_microdisk_sr.core.pairs import PairSampler
from napari_microdisk_sr.core.train import FineTuneConfig, process_count, process_rank
from napari_microdisk_sr.core.train.ddp import Ranks, join, process_batch


def test_the_parts_of_a_batch_are_the_batch_of_one_process():
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (24, 24), dtype=np.uint8) for _ in range(3)]
    sampler = PairSampler(crops, PairConfig(patch=8, scale=4, pairs_per_epoch=9, seed=1))
    whole = list(sampler.batches(2, 4))
    parts = [list(sampler.batches(2, 4, part=(k, 3), first_batch=1)) for k in range(3)]
    assert [len(hr) for hr, _ in whole] == [4, 4, 1]
    assert [[len(hr) for hr, _ in batches] for batches in parts] == [[1, 0], [1, 0], [2, 1]]
    for step, (lr, hr) in enumerate(whole[1:]):
        torch.testing.assert_close(torch.cat([batches[step][0] for batches in parts]), lr, rtol=0, atol=0)
        torch.testing.assert_close(torch.cat([batches[step][1] for batches in parts]), hr, rtol=0, atol=0)
    assert parts[0][1][1].shape == (0, 3, 8, 8)  # an empty part keeps the shape of the pairs
    with pytest.raises(InputError, match="part 2 of 2 does not exist"):
        sampler.batches(0, 4, part=(2, 2))


def test_one_process_alone_needs_no_process_group():
    ranks = Ranks(torch.device("cpu"))
    module = nn.Conv2d(1, 1, 1)
    assert (ranks.main, ranks.part(5), ranks.most(3), ranks.wrap(module)) == (True, slice(0, 5), 3, module)
    assert torch.equal(ranks.sum(torch.ones(2)), torch.ones(2))
    assert [Ranks(torch.device("cpu"), k, 3).part(7) for k in range(3)] == [
        slice(0, 2),
        slice(2, 4),
        slice(4, 7),
    ]
    assert (process_rank(), process_count()) == (0, 1)
    with join("cpu") as alone:
        assert (alone.rank, alone.size, alone.device) == (0, 1, torch.device("cpu"))
    assert not torch.distributed.is_initialized()


def test_the_batch_is_per_process():
    config = FineTuneConfig(pairs_per_epoch=9, device="cpu")
    assert process_batch(config, Ranks(torch.device("cpu"), 0, 2)) == 2  # the CPU's 2 in each
    assert process_batch(config, Ranks(torch.device("cpu"), 0, 6)) == 1  # 9 pairs: 1 for each of 6
    assert (
        process_batch(FineTuneConfig(batch_size=3, pairs_per_epoch=9), Ranks(torch.device("cpu"), 1, 3)) == 3
    )
    with pytest.raises(
        InputError, match="a step of 4 processes with batch 3 takes 12 pairs, more than the 9"
    ):
        process_batch(FineTuneConfig(batch_size=3, pairs_per_epoch=9), Ranks(torch.device("cpu"), 0, 4))
    with pytest.raises(InputError, match="a step of 10 processes with batch 1 takes 10 pairs"):
        process_batch(config, Ranks(torch.device("cpu"), 0, 10))


def test_under_torchrun_each_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (process_rank(), process_count()) == (1, 2)
    refused = "each process trains on the GPU of its LOCAL_RANK; give --device cuda"
    with pytest.raises(InputError, match=refused), join("cuda:1"):
        pass
    assert not torch.distributed.is_initialized()
