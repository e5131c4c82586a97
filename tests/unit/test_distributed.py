"""The distributed pieces that need no second process: the layout, batch shards, checkpoints without DDP's prefix."""

from __future__ import annotations

import pytest
import torch

from transferkit.config import ProcessLayout
from transferkit.errors import ConfigError
from transferkit.training import checkpoint as ckpt
from transferkit.training import distributed
from transferkit.training.context import RunContext


def test_layout_is_torchruns_environment_or_one_process():
    assert ProcessLayout.from_env({}) == ProcessLayout(0, 1, 0)
    layout = ProcessLayout.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (layout.rank, layout.world_size, layout.local_rank, layout.is_main) == (3, 4, 1, False)
    with pytest.raises(ConfigError, match="must be integers"):
        ProcessLayout.from_env({"RANK": "x"})


@pytest.mark.parametrize("n,bs,world", [(80, 8, 2), (23, 8, 2), (23, 6, 4), (3, 8, 4), (10, 5, 3)])
def test_shards_step_together_and_cover_each_global_batch(n, bs, world):
    batches = [list(range(n))[i: i + bs] for i in range(0, n, bs)]
    shards = [distributed.shard_batches(batches, RunContext(torch.device("cpu"), r, world)) for r in range(world)]
    assert {len(s) for s in shards} == {len(batches)}  # every process takes the same number of steps
    for step, batch in enumerate(batches):
        parts = [s[step] for s in shards]
        assert all(parts) and max(map(len, parts)) - min(map(len, parts)) <= 1
        assert set(batch) <= {i for p in parts for i in p} <= set(range(n))  # padded only when smaller than world
        if len(batch) >= world:
            assert sorted(i for p in parts for i in p) == sorted(batch)


def test_one_process_is_the_identity():
    ctx = RunContext(torch.device("cpu"))
    module = torch.nn.Linear(2, 2)
    assert distributed.wrap(module, ctx) is module
    assert distributed.shard_batches([[0, 1], [2]], ctx) == [[0, 1], [2]]
    assert distributed.mean_over_ranks(ctx, 0.5, 0.25, 8) == (0.5, 0.25, 8)
    assert distributed.broadcast_object(ctx, {"a": 1}) == {"a": 1} and distributed.merged(ctx, {"x": "y"}) == {"x": "y"}


def test_a_checkpoint_with_ddps_prefix_resumes_without_it(tmp_path):
    """Checkpoints are saved from the unwrapped model; one saved from a DDP wrapper elsewhere still loads."""
    ckpt.write_config(tmp_path, ckpt.TrainConfig(data=str(tmp_path)), strategy="partial", auto=None)
    torch.save({**ckpt.asdict(ckpt.Progress(epoch=1)), "model": {"module.head.weight": torch.ones(2)}},
               str(tmp_path / ckpt.CHECKPOINT_FILE))
    assert list(ckpt.load_resume(tmp_path).checkpoint["model"]) == ["head.weight"]



def test_nproc_must_agree_with_a_launcher_that_started_other_processes(split_data, monkeypatch, capsys):
    from transferkit.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["train", str(split_data), "--model", "tiny_cnn", "--nproc", "3", "--quiet"]) == 2
    assert "--nproc 3 under a launcher that started 2 processes" in capsys.readouterr().err


@pytest.mark.parametrize("checkpointed", [True, False])
def test_a_failed_process_points_to_resume_only_when_a_checkpoint_exists(tmp_path, monkeypatch, checkpointed):
    import torch.distributed.run as trun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from transferkit.errors import DistributedError
    from transferkit.training.distributed import launch_torchrun

    def failing(_args):
        raise ChildFailedError("transferkit", {1: ProcessFailure(local_rank=1, pid=1, exitcode=1, error_file="")})

    monkeypatch.setattr(trun, "run", failing)
    if checkpointed:
        (tmp_path / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(DistributedError, match="Training process 1 of 2 failed \\(exit code 1\\)") as err:
        launch_torchrun(["train", "data"], 2, run_dir=tmp_path)
    assert ("--resume" in str(err.value)) == checkpointed


def test_more_processes_than_gpus_is_a_config_error_not_a_cuda_traceback(monkeypatch):
    import torch

    from transferkit.errors import ConfigError
    from transferkit.training import context

    monkeypatch.setattr(context, "resolve_device", lambda _d: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="2 training processes on this machine need 2\\+ GPUs; it has 1"):
        context.RunContext.create("cuda", rank=1, world_size=2, local_rank=1)
