"""Distributed data parallel training with fastai's `learn.distrib_ctx()` (Accelerate), 2 processes on CPU (gloo).

The workers are launched once (module fixture) with the environment `torchrun` would set; each trains the plain
model and then every callback below, and saves its weights. The test then checks that the ranks agree."""
import os, socket, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch
pytest.importorskip('accelerate')  # fastai's distrib_ctx needs it (dev extras)
from fastai.vision.all import *
from mixmo_fastai.all import *

ROOT = Path(__file__).resolve().parent.parent
NAMES = ['plain', 'InputMix', 'ManifoldMixup', 'CutMixMo', 'LinesSubspace', 'LinesSubspace-no-bn-update', 'PackedEnsemble']
WORLD_SIZE = 2

WORKER = textwrap.dedent('''
    import sys, torch
    from pathlib import Path
    from fastai.vision.all import *
    import fastai.distributed
    from fastai.distributed import *
    from mixmo_fastai.all import *

    # CPU workaround, for this test only: fastai's DistributedDL broadcasts the shuffled indices from rank 0 as a
    # `.cuda()` tensor (NCCL needs CUDA tensors). The gloo backend that Accelerate picks on a CPU takes CPU tensors.
    def _broadcast_cpu(self, t, rank):
        t = LongTensor(t)
        torch.distributed.broadcast(t, rank)
        return t.tolist()
    fastai.distributed.DistributedDL._broadcast = _broadcast_cpu

    class InputMix(MixingCallback):
        "The package's base with input mixup: the harness check for any `MixingCallback`"
        def before_batch(self):
            super().before_batch()
            if self.skip_batch: return
            lam = sample_lam(0.4, (self.x.shape[0],), self.x.device)
            perm = torch.randperm(self.x.shape[0], device=self.x.device)
            self.learn.xb = (mix(self.x, self.x[perm], lam),)
            self.set_mix(lam, perm)

    class Record(Callback):
        "What each rank saw: the model's wrapper, its training batches, how many of them were mixed"
        order = 90
        def before_fit(self):
            self.wrapper,self.n_batches,self.n_mixed,self.n_items = type(self.learn.model).__name__,0,0,0
            self.local_losses = []
        def after_batch(self):
            if not self.training: return
            self.n_batches += 1
            self.local_losses.append(float(self.learn.loss_grad))  # this rank's loss (the recorder's is gathered)
            self.n_items += find_bs(self.learn.yb)
            self.n_mixed += any(getattr(cb, 'mixed', False) for cb in self.learn.cbs)

    def dls():
        "The first 256 training / 64 validation digits (the same on every rank)"
        dblock = digits_block()
        train, valid = digits_split()
        items = train[:256] + valid[:64]
        dblock.get_items = lambda _: items
        dblock.splitter = IndexSplitter(list(range(256, 320)))
        return dblock.dataloaders(None, bs=32, device='cpu', num_workers=0)

    MAKERS = {'plain': list, 'InputMix': lambda: [InputMix()], 'ManifoldMixup': lambda: [ManifoldMixup()],
              'CutMixMo': lambda: [CutMixMo()], 'LinesSubspace': lambda: [LinesSubspace()],
              'LinesSubspace-no-bn-update': lambda: [LinesSubspace(bn_update=False)],
              'PackedEnsemble': lambda: [PackedEnsemble()]}
    rank, out = rank_distrib(), Path(sys.argv[1])
    for name in sys.argv[2:]:
        set_seed(0)
        learn = Learner(dls(), digits_net(16), metrics=accuracy, cbs=MAKERS[name]())
        rec, orig = Record(), learn.loss_func
        try:
            # SyncBatchNorm only trains on GPUs: sync_bn=False on a CPU. `cpu=True` makes Accelerate use gloo.
            with learn.distrib_ctx(sync_bn=False, cpu=True):
                learn.fit(1, 1e-2, cbs=rec)
        except Exception as e:
            import traceback
            torch.save({'error': ''.join(traceback.format_exception(e))[-3000:]}, out/f'{name}-rank{rank}.pt')
            torch.distributed.barrier()  # both ranks fail at the same point; meet before the next run
            continue
        torch.save({'params': {k: v.detach() for k, v in learn.model.named_parameters()},
                    'buffers': {k: v.detach() for k, v in learn.model.named_buffers() if 'running' in k},
                    'wrapper': rec.wrapper, 'n_batches': rec.n_batches, 'n_items': rec.n_items, 'n_mixed': rec.n_mixed,
                    'world': torch.distributed.get_world_size(), 'backend': torch.distributed.get_backend(),
                    'loss_kept': learn.loss_func is orig, 'losses': rec.local_losses,
                    'unwrapped': not hasattr(learn.model, 'module')}, out/f'{name}-rank{rank}.pt')
    print('done', rank)
''')

def _free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

@pytest.fixture(scope='module')
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    script = out/'worker.py'
    script.write_text(WORKER)
    port = str(_free_port())
    procs = []
    for rank in range(WORLD_SIZE):
        env = {**os.environ, 'WORLD_SIZE': str(WORLD_SIZE), 'RANK': str(rank), 'LOCAL_RANK': str(rank),
               'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': port, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}
        procs.append(subprocess.Popen([sys.executable, str(script), str(out), *NAMES], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try: logs = [p.communicate(timeout=420)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None: p.kill()
    for p, log in zip(procs, logs): assert p.returncode == 0, log[-4000:]
    return {name: [torch.load(out/f'{name}-rank{r}.pt') for r in range(WORLD_SIZE)] for name in NAMES}

_KNOWN = {}  # name -> known defect (xfail, strict)

@pytest.mark.parametrize('name', [pytest.param(n, marks=[pytest.mark.xfail(strict=True, reason=_KNOWN[n])] if n in _KNOWN else [])
                                  for n in NAMES])
def test_ranks_train_in_step(name, results):
    ranks = results[name]
    for r in ranks: assert 'error' not in r, r['error']
    for r in ranks:
        assert r['world'] == WORLD_SIZE and r['backend'] == 'gloo'
        assert r['wrapper'] == 'DistributedDataParallel' and r['unwrapped'] and r['loss_kept']
        # every rank saw its half of the 256 training items
        assert r['n_items'] == 256 // WORLD_SIZE and r['n_batches'] == 4
        assert all(math.isfinite(l) for l in r['losses'])
        if name in ('InputMix', 'ManifoldMixup', 'CutMixMo'): assert r['n_mixed'] > 0
    # the ranks saw different data (different losses) but end with the same weights: gradients were averaged
    assert ranks[0]['losses'] != ranks[1]['losses']
    p0, p1 = ranks[0]['params'], ranks[1]['params']
    assert p0.keys() == p1.keys()
    for k in p0: torch.testing.assert_close(p0[k], p1[k], rtol=0, atol=1e-6, msg=f'{name}: {k} differs between ranks')
    if name == 'LinesSubspace':
        # update_bn re-estimated the BatchNorm statistics at the evaluation point: the same on every rank
        b0, b1 = ranks[0]['buffers'], ranks[1]['buffers']
        assert b0 and b0.keys() == b1.keys()
        for k in b0: torch.testing.assert_close(b0[k], b1[k], rtol=1e-5, atol=1e-6, msg=f'{k} differs between ranks')

def test_ranks_weights_differ_from_init(results):
    "The runs trained: the weights moved away from the seeded initialisation"
    set_seed(0)
    init = dict(digits_net(16).named_parameters())
    trained = results['plain'][0]['params']
    assert any(not torch.allclose(init[k], trained[k]) for k in init)

def test_sync_batchnorm_keeps_subspace_batchnorm():
    "`distrib_ctx(sync_bn=True)` converts BatchNorm layers to SyncBatchNorm: a subspace model must compute the same"
    set_seed(0)
    model = to_subspace(digits_net(8))
    set_point(model, 0.3)
    model.eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad(): ref = model(x)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    n_sync = sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    assert n_sync > 0
    # SyncBatchNorm runs in eval mode on a CPU (the statistics are not synchronised then): same outputs at that point
    with torch.no_grad(): torch.testing.assert_close(synced(x), ref)
