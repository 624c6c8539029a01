"""Latent sharding: a ``ShardedCoder`` spread over 2 and 3 gloo processes computes the forward (reconstruction, loss)
and the backward (every parameter's gradient) of one plain ``SparseCoder`` with the same weights, to 1e-5, for every
architecture, with dead latents (AuxK, the pre-activation loss) and a transcoder. The reference is the dense decoder
path (plain autograd through the dense pre-activations), which shares none of the sharded code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from interp_workloads.sae import CoderConfig, SparseCoder
from interp_workloads.sae.sharded import ShardedCoder, ShardGroup

D, F, K, ROWS = 16, 48, 4, 40

CASES = {
    "topk": CoderConfig(architecture="topk", d_in=D, d_sae=F, k=K, aux_k=8),
    "topk-k-above-shard-width": CoderConfig(architecture="topk", d_in=D, d_sae=F, k=20, aux_k=20),
    "batchtopk": CoderConfig(architecture="batchtopk", d_in=D, d_sae=F, k=K, aux_k=8),
    "jumprelu": CoderConfig(architecture="jumprelu", d_in=D, d_sae=F, dead_preact_coefficient=0.5),
    "relu": CoderConfig(architecture="relu", d_in=D, d_sae=F, dead_preact_coefficient=0.5),
    "topk-transcoder": CoderConfig(architecture="topk", d_in=D, d_sae=F, d_out=12, k=K, aux_k=8),
}


def reference(cfg: CoderConfig) -> tuple[SparseCoder, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """A coder with non-trivial weights (random biases and thresholds), its inputs and a dead mask."""
    generator = torch.Generator().manual_seed(7)
    coder = SparseCoder(CoderConfig.from_dict(cfg.to_dict() | {"decoder": "dense"}), generator=generator)
    with torch.no_grad():
        coder.b_enc.normal_(0, 0.3, generator=generator)
        coder.b_dec.normal_(0, 0.3, generator=generator)
        coder.W_dec.mul_(1 + torch.rand(F, 1, generator=generator))  # ReLU's rows are not unit norm
        if cfg.architecture == "jumprelu":
            coder.threshold.uniform_(0.0, 0.4, generator=generator)
    x = torch.randn(ROWS, D, generator=generator)
    target = torch.randn(ROWS, cfg.out_width, generator=generator) if cfg.is_transcoder else None
    dead = torch.rand(F, generator=generator) < 0.4
    return coder, x, target, dead


def _worker(rank: int, world: int, port: int, results: Path) -> None:
    try:
        os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        dist.init_process_group("gloo", rank=rank, world_size=world)
        torch.set_num_threads(1)
        shards = ShardGroup(group=dist.group.WORLD, ranks=tuple(range(world)), index=rank)
        for name, cfg in CASES.items():
            full, x, target, dead = reference(cfg)
            sharded = ShardedCoder(full, shards)
            out = sharded(x, target=target, dead_mask=dead, variance=None if name != "relu" else 3.0)
            out.loss.backward()
            grads = {n: sharded.gather(n, p.grad) for n, p in sharded.named_parameters()}
            state = sharded.full_state()
            if rank == 0:
                torch.save({"reconstruction": out.reconstruction.detach(), "loss": out.loss.detach(),
                            "counts": out.counts, "grads": grads, "state": state,
                            "losses": {k: v.detach() for k, v in out.losses.items()}},
                           results / f"{name}.pt")
            else:
                torch.save({"counts": out.counts}, results / f"{name}-{rank}.pt")
        dist.destroy_process_group()
    except BaseException:
        (results / f"error-{rank}").write_text(traceback.format_exc())
        raise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module", params=[2, 3], ids=["2-shards", "3-shards"])
def sharded_results(request, tmp_path_factory) -> tuple[int, Path]:
    world = request.param
    results = tmp_path_factory.mktemp(f"sharded-{world}")
    port = _free_port()
    ranks = [subprocess.Popen([sys.executable, __file__, str(rank), str(world), str(port), str(results)],
                              env=os.environ | {"OMP_NUM_THREADS": "1"}) for rank in range(world)]
    codes = [rank.wait(300) for rank in ranks]
    errors = sorted(results.glob("error-*"))
    assert not errors, errors[0].read_text()
    assert codes == [0] * world
    return world, results


@pytest.mark.parametrize("name", sorted(CASES))
def test_sharded_forward_and_backward_equal_one_coder(sharded_results, name):
    world, results = sharded_results
    got = torch.load(results / f"{name}.pt", weights_only=True)
    coder, x, target, dead = reference(CASES[name])
    coder.train()
    out = coder(x, target=target, dead_mask=dead, variance=None if name != "relu" else 3.0)
    out.loss.backward()
    torch.testing.assert_close(got["reconstruction"], out.reconstruction.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(got["loss"], out.loss.detach(), rtol=1e-5, atol=1e-6)
    for key in ("auxk", "dead_preact", "l1", "l0_penalty"):
        assert (key in got["losses"]) == (key in out.losses), key
        if key in out.losses:
            torch.testing.assert_close(got["losses"][key], out.losses[key].detach(), rtol=1e-5, atol=1e-6)
    for param_name, param in coder.named_parameters():
        assert param.grad is not None and float(param.grad.abs().max()) > 0, param_name
        torch.testing.assert_close(got["grads"][param_name], param.grad, rtol=0, atol=1e-5, msg=param_name)
    for buffer_name, buffer in coder.named_buffers():  # BatchTopK's threshold estimate
        torch.testing.assert_close(got["state"][buffer_name], buffer, rtol=0, atol=1e-6)
    counts = torch.cat([got["counts"]] + [torch.load(results / f"{name}-{r}.pt", weights_only=True)["counts"]
                                          for r in range(1, world)])
    if out.latent_indices is None:
        expected = (out.latent_acts != 0).sum(0).float()
    else:
        expected = torch.bincount(out.latent_indices[out.latent_acts != 0], minlength=F).float()
    torch.testing.assert_close(counts, expected, rtol=0, atol=0)


def test_whole_state_round_trips_through_the_shards(sharded_results):
    _, results = sharded_results
    got = torch.load(results / "jumprelu.pt", weights_only=True)
    coder, *_ = reference(CASES["jumprelu"])
    for key, value in coder.state_dict().items():
        torch.testing.assert_close(got["state"][key], value, rtol=0, atol=0)


def test_a_dictionary_not_divisible_by_the_shards_is_refused():
    coder = SparseCoder(CoderConfig(architecture="topk", d_in=D, d_sae=50, k=K))
    with pytest.raises(ValueError, match="not divisible by the 3 latent shards"):
        ShardedCoder(coder, ShardGroup(group=None, ranks=(0, 1, 2), index=0))


if __name__ == "__main__":  # one rank, started by the fixture
    _worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
