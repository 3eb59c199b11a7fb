"""clipcourse.distributed (lesson 10): negatives gathered across processes equal one process's big batch.

Two CPU processes joined by gloo, each with half of a batch, compute the same loss and the same
gradients (within 1e-6) as one process holding the whole batch; open_clip's ClipLoss with
world_size=2 agrees; `train.train` runs unchanged under DistributedDataParallel; and torchrun
runs `python -m clipcourse.distributed`.
"""

import multiprocessing
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from clipcourse import distributed, train
from clipcourse.loss import clip_loss

TOL = 1e-6


def _features(n, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    txt = F.normalize(img + 0.8 * torch.randn(n, d, generator=g), dim=-1)
    return img, txt


# --- in one process ---------------------------------------------------------------------------

def test_local_losses_average_to_the_big_batch_loss_and_gradients():
    img, txt = _features(12)
    tau = torch.tensor(0.07)
    a, b = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
    big = clip_loss(a, b, tau)
    big.backward()
    world = 3
    x, y = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
    shards = zip(x.chunk(world), y.chunk(world))
    mean = sum(distributed.local_clip_loss(i, t, x, y, tau, rank) for rank, (i, t) in enumerate(shards)) / world
    mean.backward()
    assert abs(mean.item() - big.item()) < TOL
    assert torch.allclose(x.grad, a.grad, atol=TOL) and torch.allclose(y.grad, b.grad, atol=TOL)


def test_without_the_rank_offset_the_local_loss_is_wrong():
    img, txt = _features(8)
    shards = list(zip(img.chunk(2), txt.chunk(2)))
    right = distributed.local_clip_loss(*shards[1], img, txt, 0.07, rank=1)
    wrong = distributed.local_clip_loss(*shards[1], img, txt, 0.07, rank=0)   # labels point at rank 0's pairs
    assert wrong.item() > right.item() + 1


def test_single_process_falls_back_to_clip_loss():
    assert not distributed.is_distributed()
    img, txt = _features(6)
    assert torch.equal(distributed.gathered_clip_loss(img, txt, 0.1), clip_loss(img, txt, 0.1))
    assert distributed.all_gather_with_grad(img) is img


def test_arguments_are_checked():
    img, txt = _features(8)
    with pytest.raises(ValueError, match="rank"):
        distributed.local_clip_loss(img[:4], txt[:4], img, txt, 0.07, rank=2)
    with pytest.raises(TypeError, match="rank"):
        distributed.local_clip_loss(img[:4], txt[:4], img, txt, 0.07, rank=1.0)
    with pytest.raises(ValueError, match="temperature"):
        distributed.local_clip_loss(img[:4], txt[:4], img, txt, 0.0, rank=0)
    with pytest.raises(TypeError, match="x must be"):
        distributed.all_gather_with_grad([1.0])
    with pytest.raises(ValueError, match="world_size"):
        distributed.launch(distributed.demo_step, world_size=0)
    with pytest.raises(TypeError, match="fn"):
        distributed.launch("demo_step")


def test_gather_features_exposes_the_inner_temperature():
    model, images, tokens = distributed.demo_model_and_batch(4)
    wrapped = distributed.GatherFeatures(model)
    assert wrapped.temperature is model.temperature
    assert wrapped.logit_bias is None is model.logit_bias                 # a CLIP model: no bias
    out, ref = wrapped(images, tokens), model(images, tokens)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))   # one process: nothing to gather


def test_gather_features_can_be_evaluated_like_the_model():
    """train.train hands its `evaluate=` callback the model it trains: under DDP that is the wrapper, which had no
    encode_image (an AttributeError in the callback). It now gives the wrapped model's features, not gathered."""
    from clipcourse import evaluate
    model, images, tokens = distributed.demo_model_and_batch(4)
    wrapped = distributed.GatherFeatures(model)
    holder = torch.nn.Module()
    holder.module = model                                  # what DistributedDataParallel looks like from outside
    for outer in (wrapped, distributed.GatherFeatures(holder)):
        assert torch.equal(evaluate.embed_texts(outer, tokens), evaluate.embed_texts(model, tokens))
        assert torch.equal(outer.encode_image(images), model.encode_image(images))    # float images (B, 3, H, W)


# --- two processes ----------------------------------------------------------------------------

def test_two_processes_equal_one_process_with_the_big_batch():
    per_process = 8
    results = distributed.launch(distributed.demo_step, world_size=2, args=(per_process, 0), timeout=300)
    model, images, tokens = distributed.demo_model_and_batch(2 * per_process, 0)
    big = clip_loss(*model(images, tokens))
    big.backward()
    for how in ("local loss", "GatherFeatures"):
        loss = sum(r[how]["loss"] for r in results) / 2
        assert abs(loss - big.item()) < TOL, how
        for name, p in model.named_parameters():
            for r in results:
                assert torch.allclose(r[how]["grads"][name], p.grad, rtol=0, atol=TOL), (how, name)
    # without the gather each process sees only its own negatives: another loss, other gradients
    alone = sum(r["no gather"]["loss"] for r in results) / 2
    assert big.item() - alone > 0.3
    assert any((results[0]["no gather"]["grads"][n] - p.grad).abs().max() > 1e-3 for n, p in model.named_parameters())


def _open_clip_worker(rank, world_size, n):
    """Our gathered losses and open_clip's ClipLoss(gather_with_grad=True), local and global, on the same shard."""
    import open_clip

    img, txt = _features(world_size * n, seed=3)
    mine = slice(rank * n, (rank + 1) * n)
    out = {}
    for local_loss in (True, False):
        for name in ("ours", "open_clip"):
            x, y = img[mine].clone().requires_grad_(True), txt[mine].clone().requires_grad_(True)
            if name == "open_clip":
                reference = open_clip.loss.ClipLoss(local_loss=local_loss, gather_with_grad=True, rank=rank,
                                                    world_size=world_size)
                loss = reference(x, y, logit_scale=torch.tensor(1 / 0.05))
            elif local_loss:
                loss = distributed.gathered_clip_loss(x, y, 0.05)
            else:                                    # what GatherFeatures + clip_loss compute
                loss = clip_loss(distributed.all_gather_with_grad(x), distributed.all_gather_with_grad(y), 0.05)
            loss.backward()
            out[local_loss, name] = (loss.item(), x.grad, y.grad)
    return out


def test_gathered_loss_equals_open_clip_clip_loss_with_world_size_2():
    pytest.importorskip("open_clip")
    results = distributed.launch(_open_clip_worker, world_size=2, args=(6,), timeout=300)
    for r in results:
        for local_loss in (True, False):
            (ours, gi, gt), (ref, ri, rt) = r[local_loss, "ours"], r[local_loss, "open_clip"]
            assert abs(ours - ref) < TOL, local_loss
            assert torch.allclose(gi, ri, atol=TOL) and torch.allclose(gt, rt, atol=TOL), local_loss


class _Gradients(train.Callback):
    """After the step: the gradients the optimiser used (train zeroes them only before the next backward)."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def on_step_end(self, state):
        self.grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters()}


def _ddp_train_worker(rank, world_size, per_process):
    """train.train, unchanged, on this process's shard, the model in DDP and GatherFeatures."""
    from torch.nn.parallel import DistributedDataParallel

    model, images, tokens = _uint8_batch(world_size * per_process)
    shard = slice(rank, None, world_size)
    wrapped = distributed.GatherFeatures(DistributedDataParallel(model))
    cfg = train.TrainConfig(steps=1, batch_size=per_process, warmup_steps=1, precision="float32",
                            device="cpu")
    grads = _Gradients(model)
    _, history = train.train(wrapped, images[shard], tokens[shard], cfg, progress=False, callbacks=[grads])
    return {"loss": history.loss, "grads": grads.grads}


def _uint8_batch(n):
    from clipcourse import data
    from clipcourse.text import Tokenizer

    model, _, _ = distributed.demo_model_and_batch(2)
    tok = Tokenizer.for_shapesworld()
    pairs = data.ShapesWorld.generate(n, seed=5)
    return model, pairs.images, tok(pairs.captions)


def test_train_runs_unchanged_under_ddp_with_the_big_batch_loss_and_gradients():
    per_process = 8
    results = distributed.launch(_ddp_train_worker, world_size=2, args=(per_process,), timeout=300)
    model, images, tokens = _uint8_batch(2 * per_process)
    cfg = train.TrainConfig(steps=1, batch_size=2 * per_process, warmup_steps=1, precision="float32",
                            device="cpu")
    grads = _Gradients(model)
    _, history = train.train(model, images, tokens, cfg, progress=False, callbacks=[grads])
    for r in results:
        # each process trained on its own 8 pairs (a shuffle of its shard); together they are the 16
        assert abs(r["loss"][0] - history.loss[0]) < TOL       # every process logs the global batch's loss
        for name, g in grads.grads.items():
            assert torch.allclose(r["grads"][name], g, rtol=0, atol=TOL), name


def test_train_clamps_the_temperature_of_a_ddp_model(tmp_path):
    """DDP keeps the model in .module: train must still find its temperature and clamp it."""
    from torch.nn.parallel import DistributedDataParallel

    model, images, tokens = _uint8_batch(8)
    with torch.no_grad():
        model.temperature.logit_scale.fill_(10.0)               # τ = e^-10, far below the floor of 0.01
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        cfg = train.TrainConfig(steps=1, batch_size=8, warmup_steps=1, precision="float32",
                            device="cpu")
        train.train(DistributedDataParallel(model), images, tokens, cfg, progress=False)
    finally:
        dist.destroy_process_group()
    assert abs(float(model.temperature().detach()) - 0.01) < 1e-6


def test_train_finds_the_siglip_bias_of_a_ddp_model_and_gives_it_the_temperature_lr(tmp_path):
    """GatherFeatures(DDP(model)) with the sigmoid loss (lesson 09): train finds the bias two wrappers down,
    its group of its own holds it (named module.logit_bias under DDP), and one process trains as without DDP."""
    import copy

    from torch.nn.parallel import DistributedDataParallel

    from clipcourse.encoders import ImageEncoderConfig
    from clipcourse.model import build_model
    from clipcourse.text import Tokenizer

    _, images, tokens = _uint8_batch(8)
    model = build_model(Tokenizer.for_shapesworld(), seed=0, temperature=0.1, logit_bias=-10.0,
                        image=ImageEncoderConfig(kind="vit", vit_width=48, vit_layers=1))
    plain = copy.deepcopy(model)
    cfg = train.TrainConfig(steps=2, batch_size=8, warmup_steps=1, precision="float32", device="cpu",
                            loss="siglip", temperature_lr=0.3)
    groups = []

    class Groups(train.Callback):
        def on_train_start(self, state):
            groups.extend(state.optimizer.param_groups)

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        wrapped = distributed.GatherFeatures(DistributedDataParallel(model))
        assert wrapped.logit_bias is model.logit_bias
        _, history = train.train(wrapped, images, tokens, cfg, progress=False, callbacks=[Groups()])
    finally:
        dist.destroy_process_group()
    assert {id(p) for p in groups[2]["params"]} == {id(model.logit_bias), id(model.logit_scale)}
    assert groups[2]["peak_lr"] == 0.3
    _, alone = train.train(plain, images, tokens, cfg, progress=False)
    assert history.as_dict() == alone.as_dict()
    assert model.logit_bias.item() == plain.logit_bias.item() != -10.0


def test_train_refuses_a_ddp_model_built_on_another_device(tmp_path):
    """DDP cannot be moved once built: moved to CUDA by train, it averaged nothing (seen on a GPU machine)."""
    from torch.nn.parallel import DistributedDataParallel

    model, images, tokens = _uint8_batch(8)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(model)                    # built on the CPU
        cfg = train.TrainConfig(steps=1, batch_size=8, warmup_steps=1, device="cuda")
        with pytest.raises(ValueError, match=r"DistributedDataParallel on cpu.*device='cuda'.*Move the model first"):
            train.train(ddp, images, tokens, cfg, progress=False)
    finally:
        dist.destroy_process_group()
    assert next(model.parameters()).device.type == "cpu"       # refused before anything moved


def _diverging_worker(rank, world_size, gather):
    """DDP training in which process 1's loss alone turns NaN at step 3 (as a bad batch in one shard would)."""
    from torch.nn.parallel import DistributedDataParallel

    model, images, tokens = _uint8_batch(world_size * 32)
    shard = slice(rank, None, world_size)
    calls, real_loss = [], train.clip_loss

    def loss(*args):
        calls.append(1)
        return real_loss(*args) * (float("nan") if rank == 1 and len(calls) == 3 else 1.0)

    train.clip_loss = loss                                      # this process only: each one is its own
    ddp = DistributedDataParallel(model)
    cfg = train.TrainConfig(steps=5, batch_size=8, warmup_steps=1, precision="float32", device="cpu")
    try:
        train.train(distributed.GatherFeatures(ddp) if gather else ddp, images[shard], tokens[shard], cfg,
                    progress=False)
    except train.TrainingDiverged as error:
        return {"error": str(error), "steps": error.history.step,
                "weights": [p.detach().clone() for p in model.parameters()]}
    return {"error": None}


@pytest.mark.parametrize("gather", [False, True], ids=["no gather", "gather"])
def test_a_loss_that_is_not_finite_in_one_process_stops_every_process_at_that_step(gather):
    """Process 1 used to raise alone while process 0 waited in DDP's all-reduce of the gradients, then failed
    with gloo's "Connection closed by peer", which says nothing of the cause."""
    first, second = distributed.launch(_diverging_worker, world_size=2, args=(gather,), timeout=300)
    assert second["error"].startswith("the loss became nan at step 3 of 5")
    assert first["error"].startswith("the gradients became NaN or infinite")
    assert "another process's loss may be the cause) at step 3 of 5" in first["error"]
    assert first["steps"] == second["steps"] == [1, 2]
    for a, b in zip(first["weights"], second["weights"]):     # both kept step 2's weights, the same ones
        assert torch.equal(a, b)


def _fails(rank, world_size):
    if rank == 1:
        raise ValueError("rank 1 is unhappy")
    return rank


def _hangs(rank, world_size):
    time.sleep(60)


def test_launch_reports_a_failing_process_and_leaves_none_behind():
    with pytest.raises(RuntimeError, match="rank 1 is unhappy"):
        distributed.launch(_fails, world_size=2, timeout=300)
    assert not multiprocessing.active_children()


def test_launch_stops_processes_that_run_past_the_timeout():
    before = os.environ.get("GLOO_SOCKET_IFNAME")
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        distributed.launch(_hangs, world_size=2, timeout=3)
    assert time.monotonic() - start < 30
    assert not multiprocessing.active_children()
    assert os.environ.get("GLOO_SOCKET_IFNAME") == before      # launch sets it for its processes only


# --- torchrun ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_torchrun_trains_with_two_cpu_processes(tmp_path):
    torchrun = shutil.which("torchrun")
    command = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]) + [
        "--standalone", "--nproc_per_node=2", "-m", "clipcourse.distributed",
        "--steps", "3", "--batch-size", "8", "--n-train", "256", "--device", "cpu", "--save", str(tmp_path / "model.pt")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if distributed._loopback_interface():
        env.setdefault("GLOO_SOCKET_IFNAME", distributed._loopback_interface())
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 processes x 8 pairs: a global batch of 16" in out.stdout, out.stdout
    assert "(gloo, cpu)" in out.stdout, out.stdout
    assert "after 3 steps" in out.stdout, out.stdout
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert "temperature.logit_scale" in state


def test_main_refuses_cuda_with_fewer_gpus_than_processes(monkeypatch, capsys):
    """One GPU and --nproc_per_node=2 failed in rank 1 with 'invalid device ordinal' (seen on a GPU machine)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(gpus + 1))
    with pytest.raises(SystemExit):
        distributed.main(["--steps", "1", "--device", "cuda"])
    err = capsys.readouterr().err
    assert f"a GPU for each of the {gpus + 1} processes on this node, and it has {gpus}" in err, err
    assert "--device cpu" in err
    assert not dist.is_initialized()


def test_main_refuses_to_run_without_torchrun(capsys):
    env_rank = os.environ.pop("RANK", None)
    try:
        with pytest.raises(SystemExit):
            distributed.main(["--steps", "1"])
    finally:
        if env_rank is not None:
            os.environ["RANK"] = env_rank
    assert "torchrun" in capsys.readouterr().err
    assert not dist.is_initialized()


def _gathers_mismatched(rank, world_size, what):
    x = torch.randn(3, 4)
    if rank == 1:
        x = torch.randn(2, 4) if what == "batch" else x.to(torch.bfloat16)
    try:
        distributed.all_gather_with_grad(x)
    except ValueError as error:
        return str(error)
    return None


@pytest.mark.parametrize("what, seen", [("batch", "rank 1: (2, 4) torch.float32"),
                                        ("dtype", "rank 1: (3, 4) torch.bfloat16")])
def test_processes_with_other_batch_sizes_or_dtypes_get_a_clear_error(what, seen):
    """Gloo aborted process 1 ('Received data size doesn't match expected size'); NCCL can wait forever. Now
    every process raises the same ValueError, which names each rank's shape and dtype."""
    errors = distributed.launch(_gathers_mismatched, world_size=2, args=(what,), timeout=120)
    assert errors[0] == errors[1] and errors[0] is not None
    assert "rank 0: (3, 4) torch.float32" in errors[0] and seen in errors[0] and "same batch size" in errors[0]


def test_all_gather_with_grad_needs_rows_of_features():
    with pytest.raises(ValueError, match=r"x must be \(B, D\).*shape \(8,\)"):
        distributed.all_gather_with_grad(torch.randn(8))


class _RecordsDtype(torch.nn.Module):
    """The model, noting the dtype its image features come out in (autocast's choice)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.dtypes = model, []
        self.temperature = model.temperature

    def forward(self, images, tokens):
        img, txt, tau = self.model(images, tokens)
        self.dtypes.append(str(img.dtype))
        return img, txt, tau


def _auto_precision_worker(rank, world_size, picks):
    from torch.nn.parallel import DistributedDataParallel

    os.environ[train.PRECISION_ENV] = picks[rank]        # what "auto" picks here: as computers with and without bf16
    model, images, tokens = _uint8_batch(16)
    recorder = _RecordsDtype(model)
    cfg = train.TrainConfig(steps=2, batch_size=8, warmup_steps=1, precision="auto", device="cpu")
    train.train(distributed.GatherFeatures(DistributedDataParallel(recorder)), images[rank::2], tokens[rank::2], cfg,
                progress=False)
    return recorder.dtypes


@pytest.mark.parametrize("picks, expected", [(("bfloat16", "float32"), "torch.float32"),
                                             (("bfloat16", "bfloat16"), "torch.bfloat16")], ids=["mixed", "both bf16"])
def test_auto_precision_is_agreed_by_every_process(picks, expected):
    """precision='auto' picks bfloat16 only where native: two such computers in one DDP run would gather features
    of two dtypes (a gloo abort before the gather checked it). Every process now runs bfloat16 only if all pick it."""
    dtypes = distributed.launch(_auto_precision_worker, world_size=2, args=(picks,), timeout=300)
    assert dtypes == [[expected] * 2, [expected] * 2]
