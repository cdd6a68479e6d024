"tools/gpu_check.py on its CPU path (issue 31): the same code a GPU run takes, at tiny sizes"
import csv, subprocess, sys
from helpers import ROOT

def test_gpu_check_cpu_path(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'gpu_check.py'), '--tiny', '--out', str(tmp_path)],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path/'gpu_check.csv')))
    methods = {'vanilla', 'manifold', 'output', 'patchup', 'mimo', 'linear_mixmo', 'cutmixmo', 'lines', 'swa', 'packed'}
    assert {(r['precision'], r['method']) for r in rows} == {(p, m) for p in ('fp32', 'fp16', 'bf16') for m in methods}
    assert all(r['ok'] == 'True' for r in rows)
    assert all(float(r['step_ms']) > 0 and float(r['infer_ms']) > 0 for r in rows)
    # MixMo reads back only its two coins per step (CPU generator); the others none
    reads = {r['method']: float(r['reads_per_step']) for r in rows if r['precision'] == 'fp32'}
    assert reads['vanilla'] == 0 and reads['cutmixmo'] <= 2, reads
    table = (tmp_path/'gpu_check.md').read_text()
    assert table.count('\n| fp16 |') == len(methods)
