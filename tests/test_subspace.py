"Subspaces end to end: pretrained weights kept, inference API, export/load, save/load, member logits, timm layers."
import pytest, torch, timm
from fastai.vision.all import *
from mixmo_fastai.all import *

@pytest.fixture(scope='module')
def dls(): return digits_dls(bs=128)

def _fit(learn, *args, **kw):
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(*args, **kw)
    return learn

def _preds(learn, **kw):
    with learn.no_bar(): return learn.get_preds(**kw)

def test_pretrained_model_is_endpoint_zero(dls):
    set_seed(0)
    vanilla = _fit(Learner(dls, digits_net(16), loss_func=CrossEntropyLossFlat()), 2, 3e-2)
    ref, _ = _preds(vanilla)
    learn = Learner(dls, vanilla.model, loss_func=CrossEntropyLossFlat(), cbs=LinesSubspace())
    assert len(subspace_layers(learn.model)) == 13
    with learn.lines_subspace.evaluating(0., bn_update=False):
        torch.testing.assert_close(_preds(learn)[0], ref)
    # elsewhere on the line the model differs (endpoint 1 is a fresh initialisation)
    assert not torch.allclose(_preds(learn)[0], ref)

def test_export_load_learner_and_save_load(dls, tmp_path):
    set_seed(0)
    learn = _fit(Learner(dls, digits_net(16), loss_func=CrossEntropyLossFlat(), metrics=accuracy,
                         cbs=LinesSubspace(ensemble_points=[0., 1.]), path=tmp_path), 3, 3e-2)
    preds, targs = _preds(learn)
    assert accuracy(preds, targs) > 0.6
    learn.export('sub.pkl')
    loaded = load_learner(tmp_path/'sub.pkl')
    assert isinstance(loaded.lines_subspace, LinesSubspace)
    torch.testing.assert_close(_preds(loaded, dl=loaded.dls.test_dl(dls.valid_ds.items, with_labels=True))[0], preds)
    pred_class, _, probs = loaded.predict(dls.valid_ds.items[0])
    torch.testing.assert_close(probs, preds[0])
    # save/load of the weights into a new learner converted the same way
    learn.save('w')
    other = Learner(dls, digits_net(16), loss_func=CrossEntropyLossFlat(), cbs=LinesSubspace(), path=tmp_path)
    other.load('w')
    with learn.lines_subspace.evaluating(0.3, bn_update=False), other.lines_subspace.evaluating(0.3, bn_update=False):
        torch.testing.assert_close(_preds(other)[0], _preds(learn)[0])

def test_collapsed_model_exports_smaller(dls, tmp_path):
    set_seed(0)
    learn = _fit(Learner(dls, digits_net(16), loss_func=CrossEntropyLossFlat(), cbs=LinesSubspace(), path=tmp_path), 2, 3e-2)
    preds, _ = _preds(learn)
    flat = Learner(dls, learn.lines_subspace.collapse(), loss_func=CrossEntropyLossFlat(), path=tmp_path)
    assert not subspace_layers(flat.model)
    torch.testing.assert_close(_preds(flat)[0], preds, rtol=1e-4, atol=1e-5)
    learn.export('sub.pkl'); flat.export('flat.pkl')
    # every parameter of digits_net is in a converted layer: the plain model has half as many
    assert 2 * sum(p.numel() for p in flat.model.parameters()) == sum(p.numel() for p in learn.model.parameters())
    assert (tmp_path/'flat.pkl').stat().st_size < (tmp_path/'sub.pkl').stat().st_size
    torch.testing.assert_close(_preds(load_learner(tmp_path/'flat.pkl'), dl=dls.valid)[0], preds, rtol=1e-4, atol=1e-5)

def test_member_logits_contract(dls):
    seen = []
    class Spy(Callback):
        order = 50
        def after_pred(self): seen.append((self.training, None if self.learn.member_logits is None else self.learn.member_logits.shape))
    set_seed(0)
    learn = Learner(dls, digits_net(8), loss_func=CrossEntropyLossFlat(), cbs=[LinesSubspace(ensemble_points=[0., .5, 1.]), Spy()])
    _fit(learn, 1, 1e-2)
    assert {s for s in seen if s[0]} == {(True, None)}
    assert {s[1][1:] for s in seen if not s[0]} == {(3, 10)}
    seen.clear()
    preds, targs = _preds(learn)
    members = learn.member_logits  # the last validation batch
    assert members.shape[1:] == (3, 10)
    torch.testing.assert_close(preds[-len(members):], members.mean(1).softmax(1))

def test_layerwise_draws_distinct_alphas(dls):
    coeffs = []
    class Spy(Callback):
        order = 1
        def before_batch(self):
            if self.training: coeffs.append([l.coeffs[1] for l in subspace_layers(self.learn.model)])
    set_seed(0)
    for layerwise in (True, False):
        coeffs.clear()
        _fit(Learner(dls, digits_net(8), loss_func=CrossEntropyLossFlat(), cbs=[LinesSubspace(layerwise=layerwise), Spy()]), 1, 1e-2)
        n_distinct = {len(set(c)) for c in coeffs}
        assert n_distinct == ({13} if layerwise else {1})
        assert len({c[0] for c in coeffs}) == len(coeffs)  # a new draw every batch

def test_timm_layers_keep_their_forward():
    "timm's BatchNormAct2d (a BatchNorm2d subclass with its activation inside) runs its own forward"
    set_seed(0)
    model = timm.create_model('mobilenetv3_small_050', pretrained=False, num_classes=4)
    x = torch.randn(2, 3, 32, 32)
    model.eval(); ref = model(x)
    sub = to_subspace(model)
    assert any(type(l.layer).__name__ == 'BatchNormAct2d' and l.kind == 'module' for l in subspace_layers(sub))
    torch.testing.assert_close(sub(x), ref)
    sub.train(); set_point(sub, 0.5)
    (sub(x).sum() + subspace_cos2(sub)).backward()
    assert all(p.grad is not None for p in sub.parameters())

def test_refuses_what_it_cannot_convert(dls):
    with pytest.raises(ValueError, match='no Conv1d/2d/3d, Linear or BatchNorm'): to_subspace(nn.Sequential(nn.ReLU()))
    sub = to_subspace(digits_net(8))
    with pytest.raises(ValueError, match='convert it once'): to_subspace(sub)

def test_refuses_to_convert_a_wrapped_model(dls):
    "Added after the model was wrapped (as by distrib_ctx), the callback refuses instead of training endpoints DDP does not know"
    learn = Learner(dls, nn.DataParallel(digits_net(8)), loss_func=CrossEntropyLossFlat())
    learn.add_cb(LinesSubspace())
    with pytest.raises(RuntimeError, match='pass it to the Learner'): _fit(learn, 1, 1e-2)

def test_bn_update_without_accelerate():
    "fastai.distributed needs `accelerate`, which is not a dependency: the BatchNorm re-estimation must not import it (found by the GPU set-up's rehearsal)"
    import subprocess, sys
    code = ("import sys; sys.modules['accelerate'] = None\n"  # as if it were not installed
            "from fastai.vision.all import *\nfrom mixmo_fastai.all import *\n"
            "learn = Learner(digits_dls(bs=64), digits_net(8), cbs=LinesSubspace())\n"
            "with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)\n"
            "assert 'fastai.distributed' not in sys.modules\nprint(learn.validate())")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
