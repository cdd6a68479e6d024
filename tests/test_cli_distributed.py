"""The command line on several processes: `accelerate launch` runs `mixmo-fastai train` on 2 CPU processes (gloo).

Each process runs the console script's `main` (the method, then plain training, as `mixmo-fastai train` does) and
saves the weights it ends with. The second process is given another seed: its model starts from other weights and
draws other masks, so the ranks end with the same weights only if fastai's `DistributedDataParallel` ran (the first
rank's weights broadcast at the start, the gradients averaged at every step). Only the first process prints."""
import os, shutil, socket, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch
pytest.importorskip('accelerate')

ROOT = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent('''
    import sys, torch
    from fastai.torch_core import rank_distrib
    import mixmo_fastai.cli as cli
    learners, orig = [], cli.train
    def train(*args, **kwargs):
        learn, res = orig(*args, **kwargs)
        learners.append(learn)
        return learn, res
    cli.train = train
    out, argv = sys.argv[1], sys.argv[2:]
    if rank_distrib(): argv += ['--seed', '1']  # without DDP, the ranks would end apart
    cli.main(argv)
    assert torch.distributed.is_initialized() and torch.distributed.get_world_size() == 2
    for learn in learners:
        torch.save({k: v.detach() for k, v in learn.model.state_dict().items()},
                   f"{out}/{learn.model.__class__.__name__}-{len(learn.cbs)}-rank{rank_distrib()}.pt")
''')

def _free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def test_train_under_accelerate_launch(tmp_path):
    accelerate = shutil.which('accelerate') or str(Path(sys.executable).parent/'accelerate')
    (tmp_path/'worker.py').write_text(WORKER)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg', 'CUDA_VISIBLE_DEVICES': ''}
    # --multi_gpu is Accelerate's multi-process launcher (torchrun); without a GPU the processes train on CPUs, gloo
    cmd = [accelerate, 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
           '--dynamo_backend', 'no', '--main_process_port', str(_free_port()), str(tmp_path/'worker.py'), str(tmp_path),
           'train', '--method', 'cutmixmo', '--epochs', '1', '--width', '8', '--out', str(tmp_path/'m.pkl')]
    r = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # one process printed: one "saved" line, the two rows and the comparison
    assert r.stdout.count('saved the exported learner') == 1, r.stdout
    assert r.stdout.count('cutmixmo against plain training') == 1
    assert (tmp_path/'m.pkl').exists()
    files = sorted(p.name for p in tmp_path.glob('*-rank*.pt'))
    assert len(files) == 4, files  # the method and plain training, on each of the 2 ranks
    for f0 in [f for f in files if f.endswith('rank0.pt')]:
        s0, s1 = torch.load(tmp_path/f0), torch.load(tmp_path/f0.replace('rank0', 'rank1'))
        assert s0.keys() == s1.keys()
        for k in s0:
            if 'num_batches_tracked' in k: continue
            torch.testing.assert_close(s0[k], s1[k], rtol=0, atol=1e-6, msg=f'{f0}: {k} differs between ranks')
