"ManifoldMixup, OutputMixup, the Dynamic variants and PatchUp on real architectures, end to end."
import pickle
import numpy as np, pandas as pd, pytest, torch
import timm, torchvision
from fastai.vision.all import *
from fastai.tabular.all import *
from mixmo_fastai.all import *
from mixmo_fastai.manifold import *

ALL_CBS = (ManifoldMixup, OutputMixup, DynamicManifoldMixup, DynamicOutputMixup, PatchUp)

class Batches(Callback):
    "Train `n` batches per epoch, skip validation; record, per training batch, what the mixing callback did"
    order = 1  # after the mixing callback: its after_loss has put the original loss back
    def __init__(self, n=2, valid=False): self.n,self.valid,self.rows = n,valid,[]
    def after_loss(self):
        if not self.training: return
        cb = self.learn.cbs.filter(lambda c: isinstance(c, MixingCallback))[0]
        with torch.no_grad(): plain = self.learn.loss_func(self.learn.pred, *self.learn.yb)  # restored by now
        self.rows.append(dict(mixed=cb.mixed, loss=self.learn.loss.item(), plain=plain.item(),
                              site=getattr(cb, '_hooked', None) if cb.mixed else None))
    def after_batch(self):
        if self.training and self.iter + 1 >= self.n: raise CancelTrainException
        if not self.training and not self.valid: raise CancelValidException

def _fit(learn, n=2, epochs=1, lr=1e-3, valid=False):
    spy = Batches(n, valid)
    with learn.no_bar(), learn.no_logging(): learn.fit(epochs, lr, cbs=spy)
    return spy.rows

def _no_hooks(model):
    "No forward hook of a mixing callback is left on `model` (fastai's own hooks, e.g. DynamicUnet's, may stay)"
    return not any(isinstance(getattr(h, '__self__', None), MixingCallback)
                   for m in model.modules() for h in m._forward_hooks.values())

def _check_every_site(learn, cb):
    "One training batch mixed at each site in turn: every site's output can be mixed and trains"
    sites = list(cb._site_mods)
    use_input, cb.use_input_mixup = cb.use_input_mixup, False
    for m in sites:
        cb.module_list = [m]
        rows = _fit(learn, n=1)
        assert rows[0]['mixed'] and rows[0]['site'] is m, type(m).__name__
        assert np.isfinite(rows[0]['loss'])
    cb.module_list, cb.use_input_mixup = None, use_input
    assert _no_hooks(learn.model)

def _site_classes(cb): return [s.split(' (')[1][:-1] for s in cb.sites if s != 'input']

# ---------------------------------------------------------------- architectures

@pytest.fixture(scope='module')
def digits1(): return digits_dls(bs=16)

@pytest.fixture(scope='module')
def digits3(): return digits_dls(bs=8, size=16, channels=3)

@pytest.mark.parametrize('arch,n_blocks', [(xresnet18, 8), (xresnet50, 16)])
def test_fastai_xresnet(digits1, arch, n_blocks):
    learn = Learner(digits1, arch(n_out=10, c_in=1), cbs=ManifoldMixup())
    rows = _fit(learn)
    cb = learn.manifold_mixup
    assert cb.sites[0] == 'input' and _site_classes(cb) == ['ResBlock']*n_blocks
    assert all(r['mixed'] for r in rows)
    _check_every_site(learn, cb)

def test_torchvision_resnet18(digits3):
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    learn = Learner(digits3, model, loss_func=CrossEntropyLossFlat(), cbs=ManifoldMixup())
    _fit(learn)
    cb = learn.manifold_mixup
    assert _site_classes(cb) == ['BasicBlock']*8 and cb.sites[1].startswith('layer1.0 ')
    _check_every_site(learn, cb)

@pytest.mark.parametrize('name,classes', [
    ('resnet18', ['BasicBlock']*8),
    ('efficientnet_b0', ['DepthwiseSeparableConv'] + ['InvertedResidual']*15)])
def test_timm(digits3, name, classes):
    model = timm.create_model(name, pretrained=False, num_classes=10)
    learn = Learner(digits3, model, loss_func=CrossEntropyLossFlat(), cbs=ManifoldMixup())
    _fit(learn)
    cb = learn.manifold_mixup
    assert _site_classes(cb) == classes
    _check_every_site(learn, cb)

def test_plain_sequential_cnn(digits1):
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    learn = Learner(digits1, model, loss_func=CrossEntropyLossFlat(), cbs=ManifoldMixup())
    _fit(learn)
    cb = learn.manifold_mixup
    assert cb.sites == ['input', '0 (Conv2d)', '2 (ReLU)', '3 (Conv2d)', '4 (ReLU)', '6 (AdaptiveAvgPool2d)']
    _check_every_site(learn, cb)

def _tabular_dls(n=200, bs=32):
    g = torch.Generator().manual_seed(0)
    df = pd.DataFrame(dict(a=torch.randint(0, 3, (n,), generator=g).numpy(),
                           b=torch.randint(0, 4, (n,), generator=g).numpy(),
                           x1=torch.randn(n, generator=g).numpy(), x2=torch.randn(n, generator=g).numpy()))
    df['y'] = ((df.x1 + df.a) > 1).astype(int)
    return TabularDataLoaders.from_df(df, procs=[Categorify, Normalize], cat_names=['a', 'b'],
                                      cont_names=['x1', 'x2'], y_names='y', y_block=CategoryBlock(), bs=bs,
                                      num_workers=0)

def test_fastai_tabular():
    learn = tabular_learner(_tabular_dls(), layers=[16, 8], cbs=ManifoldMixup())
    logged = []
    learn.logger = logged.append  # the sites are said through fastai's logger (no print)
    spy = Batches(2, False)
    with learn.no_bar(): learn.fit(1, 1e-3, cbs=spy)
    cb = learn.manifold_mixup
    # categorical codes cannot be mixed: no input site; the output LinBnDrop is not a site
    assert cb.sites == ['layers.0 (LinBnDrop)', 'layers.1 (LinBnDrop)']
    assert any('input left out' in str(m) for m in logged), logged
    assert all(r['mixed'] for r in spy.rows)
    # silent under no_logging
    learn2 = tabular_learner(_tabular_dls(), layers=[16, 8], cbs=ManifoldMixup())
    logged2 = []
    learn2.logger = logged2.append
    _fit(learn2)
    assert not any('sites' in str(m) for m in logged2), logged2
    _check_every_site(learn, cb)
    p, _ = learn.get_preds()
    torch.testing.assert_close(p.sum(1), torch.ones(len(p)))

def _seg_dls(n=16, size=32, n_classes=3, bs=4):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g)
    y = (x[:, 0] * n_classes).long().clamp_max(n_classes - 1)  # the mask is readable from the image
    ds = [(TensorImage(a), TensorMask(b)) for a, b in zip(x, y)]
    return DataLoaders.from_dsets(ds[:12], ds[12:], bs=bs, device='cpu', num_workers=0)

@pytest.mark.parametrize('cb_cls', [ManifoldMixup, PatchUp])
def test_fastai_dynamic_unet(cb_cls):
    learn = unet_learner(_seg_dls(), resnet18, pretrained=False, n_out=3,
                         loss_func=CrossEntropyLossFlat(axis=1), cbs=cb_cls())
    unet = learn.model
    assert isinstance(unet, DynamicUnet)
    rows = _fit(learn, valid=True)
    cb = learn.cbs.filter(lambda c: isinstance(c, cb_cls))[0]
    classes = _site_classes(cb)
    assert classes == ['BasicBlock']*8 + ['UnetBlock']*4 + ['ResBlock'], classes
    assert all(np.isfinite(r['loss']) for r in rows)
    if cb_cls is ManifoldMixup: _check_every_site(learn, cb)
    p, t = learn.get_preds()
    assert p.shape == (4, 3, 32, 32) and t.shape == (4, 32, 32)
    torch.testing.assert_close(p.sum(1), torch.ones(4, 32, 32))

def test_unet_skip_connections_see_mixed_features():
    "fastai's DynamicUnet hooks encoder stages for its skips: the skip must carry what the main path carries"
    learn = unet_learner(_seg_dls(), resnet18, pretrained=False, n_out=3, loss_func=CrossEntropyLossFlat(axis=1))
    unet = learn.model
    encoder = unet[0]
    stage = encoder[4]  # layer1 of the encoder: fastai hooks it for a skip connection
    assert len(stage._forward_hooks) == 1
    learn.add_cb(ManifoldMixup(alpha=1., use_input_mixup=False, module_list=[stage]))
    got = {}
    encoder[5].register_forward_pre_hook(lambda m, i: got.update(main=i[0]) if m.training else None)
    class Grab(Callback):
        order = 1
        def after_pred(self):
            if self.training: got['skips'] = [b.hook.stored for b in unet.modules() if isinstance(b, UnetBlock)]
    learn.add_cb(Grab())
    rows = _fit(learn, n=1)
    assert rows[0]['mixed']
    same_shape = [s for s in got['skips'] if s.shape == got['main'].shape]
    assert same_shape and all(torch.equal(s, got['main']) for s in same_shape)

# ---------------------------------------------------------------- correctness

def _digits_learner(cb, seed=0, **kw):
    set_seed(seed, reproducible=True)
    return Learner(digits_dls(bs=64), digits_net(16), metrics=accuracy, cbs=cb, **kw)

@pytest.mark.parametrize('cb_cls', ALL_CBS)
def test_inference_as_without_callback(cb_cls, tmp_path):
    learn = _digits_learner(cb_cls())
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 3e-2)
    preds, targs = learn.get_preds()
    torch.testing.assert_close(preds.sum(1), torch.ones(len(preds)))
    assert (preds >= 0).all()
    val = learn.validate()
    _, dec, probs = learn.predict(learn.dls.valid_ds[0][0])
    assert isinstance(dec, int) or isinstance(int(dec), int)
    assert abs(probs.sum().item() - 1) < 1e-5
    learn.show_results(max_n=2)
    assert _no_hooks(learn.model)
    # the same learner without the callback gives the same answers
    cb = learn.cbs.filter(lambda c: isinstance(c, cb_cls))[0]
    learn.remove_cb(cb)
    torch.testing.assert_close(learn.get_preds()[0], preds)
    assert learn.validate() == val
    learn.add_cb(cb)
    # export / load_learner round trip, callback included
    learn.export(tmp_path/'learn.pkl')
    learn2 = load_learner(tmp_path/'learn.pkl')
    assert any(isinstance(c, cb_cls) for c in learn2.cbs)
    torch.testing.assert_close(learn2.get_preds(dl=learn.dls.valid)[0], preds)
    # and the loaded learner can train again
    learn2.dls = learn.dls
    with learn2.no_bar(), learn2.no_logging(): learn2.fit(1, 1e-3)

def test_lr_find_mixes_nothing():
    learn = _digits_learner(ManifoldMixup())
    seen = []
    class Spy(Callback):
        order = 1
        def after_pred(self): seen.append(self.learn.manifold_mixup.mixed)
    learn.add_cb(Spy())
    with learn.no_bar(), learn.no_logging(): learn.lr_find(num_it=5, show_plot=False)
    assert seen and not any(seen)

class Branchy(Module):
    "A model whose second block runs only when `use_b` is set"
    def __init__(self):
        self.a, self.b, self.head = nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 10)
        self.use_b = True
    def forward(self, x):
        h = F.relu(self.a(x.flatten(1)))
        if self.use_b: h = F.relu(self.b(h))
        return self.head(h)

def test_hooked_module_not_run_means_plain_loss(digits1):
    model = Branchy()
    class Toggle(Callback):
        order = -5
        def before_batch(self): model.use_b = self.iter % 2 == 0
    learn = Learner(digits1, model, loss_func=CrossEntropyLossFlat(),
                    cbs=[Toggle(), ManifoldMixup(alpha=1., use_input_mixup=False, module_list=[model.b])])
    rows = _fit(learn, n=6)
    test_eq([r['mixed'] for r in rows], [True, False]*3)
    for r in rows:
        if not r['mixed']: assert r['loss'] == r['plain']
        else: assert r['loss'] != r['plain']

class TupleOut(Module):
    def __init__(self, kind): self.lin, self.kind = nn.Linear(64, 16), kind
    def forward(self, x):
        h = self.lin(x.flatten(1))
        if self.kind == 'tuple': return (h, {'aux': h * 2}, torch.arange(len(h)))
        return torch.arange(3)  # nothing of batch size to mix

class TupleNet(Module):
    def __init__(self, kind): self.body, self.head = TupleOut(kind), nn.Linear(16, 10)
    def forward(self, x):
        out = self.body(x)
        h = out[0] + out[1]['aux'] if isinstance(out, tuple) else x.flatten(1)[:, :16]
        return self.head(h)

def test_tuple_module_outputs(digits1):
    net = TupleNet('tuple')
    got = {}
    net.body.register_forward_hook(lambda m, i, o: got.update(out=o))
    learn = Learner(digits1, net, loss_func=CrossEntropyLossFlat(),
                    cbs=ManifoldMixup(alpha=1., use_input_mixup=False, module_list=[net.body]))
    rows = _fit(learn, n=1)
    assert rows[0]['mixed']
    h, aux, idx = got['out'][0], got['out'][1]['aux'], got['out'][2]
    torch.testing.assert_close(aux, 2 * h)  # both tensors mixed with the same lam and perm
    test_eq(idx, torch.arange(len(h)))     # integer tensors untouched
    bad = TupleNet('bad')
    learn = Learner(digits1, bad, loss_func=CrossEntropyLossFlat(),
                    cbs=ManifoldMixup(use_input_mixup=False, module_list=[bad.body]))
    with pytest.raises(TypeError, match='no floating tensor of batch size'): _fit(learn, n=1)
    assert learn.loss_func.__class__ is CrossEntropyLossFlat and _no_hooks(bad)

def _two_in_two_out_dls(n=64, bs=16):
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    y1, y2 = (x1.sum(1) > 0).long(), (x2.sum(1) > 0).long()
    ds = _TwoInputs(zip(x1, x2, y1, y2))
    return DataLoaders.from_dsets(_TwoInputs(ds[:48]), _TwoInputs(ds[48:]), bs=bs, device='cpu', num_workers=0)

class _TwoInputs(list):
    "Items `(x1, x2, y1, y2)`: fastai reads the number of inputs from the data set"
    n_inp = 2

class TwoIn(Module):
    def __init__(self): self.a, self.b, self.head = nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(16, 2)
    def forward(self, x1, x2): return self.head(torch.cat([F.relu(self.a(x1)), F.relu(self.b(x2))], 1))

class TwoTargetLoss(Module):
    "Cross-entropy against two integer targets (honours `reduction`, so losses can be mixed)"
    y_int = True
    def __init__(self, reduction='mean'): self.reduction = reduction
    def forward(self, pred, y1, y2):
        return (F.cross_entropy(pred, y1, reduction=self.reduction) + F.cross_entropy(pred, y2, reduction=self.reduction))
    def decodes(self, x): return x.argmax(-1)
    def activation(self, x): return F.softmax(x, -1)

def test_several_inputs_and_targets():
    dls = _two_in_two_out_dls()
    assert dls.n_inp == 2
    seen = {}
    class Peek(Callback):
        order = 1
        def before_batch(self):
            if self.training: seen['xb'] = self.learn.xb
    for cb in (ManifoldMixup(alpha=1.), PatchUp(), OutputMixup()):
        learn = Learner(dls, TwoIn(), loss_func=TwoTargetLoss(), cbs=[cb, Peek()])
        rows = _fit(learn, n=3)
        assert len(rows) == 3 and all(np.isfinite(r['loss']) for r in rows)
    # the input site mixes both inputs with the same lam and perm
    class Raw(Callback):
        order = -5
        def before_batch(self):
            if self.training: seen['raw'] = self.learn.xb
    cb = ManifoldMixup(alpha=1., module_list=[])
    learn = Learner(dls, TwoIn(), loss_func=TwoTargetLoss(), cbs=[cb, Peek(), Raw()])
    rows = _fit(learn, n=1)
    assert rows[0]['mixed'] and cb.sites == ['input']
    for raw, mixed in zip(seen['raw'], seen['xb']):
        torch.testing.assert_close(mixed, cb.lam * raw + (1 - cb.lam) * raw[cb.perm])
    # the two targets are both permuted for the mixed loss
    assert len(cb.yb1) == 2

def test_input_site_refused_clearly_without_sites():
    dls = _two_in_two_out_dls()
    learn = Learner(dls, TwoIn(), loss_func=TwoTargetLoss(), cbs=ManifoldMixup(use_input_mixup=False, module_list=[]))
    with pytest.raises(ValueError, match='found no site to mix'): _fit(learn, n=1)
    assert learn.loss_func.__class__ is TwoTargetLoss

@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('cb_cls', [ManifoldMixup, PatchUp, OutputMixup])
def test_low_precision_tensors(digits1, dtype, cb_cls):
    "A model and inputs in float16/bfloat16: mixed tensors keep their dtype (no .half() anywhere)"
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)).to(dtype)
    dtypes = []
    for m in model: m.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    class Cast(Callback):
        order = -5
        def before_batch(self): self.learn.xb = tuple(x.to(dtype) for x in self.xb)
    learn = Learner(digits1, model, loss_func=CrossEntropyLossFlat(), cbs=[Cast(), cb_cls()], opt_func=partial(SGD, mom=0.9))
    learn.remove_cb(learn.recorder)  # fastai's smoothed loss cannot average a half-precision loss
    rows = _fit(learn, n=3, lr=1e-2)
    assert any(r['mixed'] for r in rows)
    assert set(dtypes) == {dtype}
    assert all(np.isfinite(r['loss']) for r in rows)

def test_sources_have_no_half():
    import mixmo_fastai.manifold as mod
    assert '.half()' not in Path(mod.__file__).read_text()

class Fail(Callback):
    def __init__(self, exc, event, at=2): self.exc,self.event,self.at,self.n = exc,event,at,0
    def _maybe(self):
        if not self.training: return
        self.n += 1
        if self.n == self.at: raise self.exc
    def before_batch(self):
        if self.event == 'before_batch': self._maybe()
    def after_pred(self):
        if self.event == 'after_pred': self._maybe()
    def after_batch(self):
        if self.event == 'after_batch': self._maybe()

@pytest.mark.parametrize('cb_cls,event,exc', [
    (ManifoldMixup, 'before_batch', RuntimeError('mid-fit failure')),  # hook registered, forward not run
    (ManifoldMixup, 'after_pred', KeyboardInterrupt()),                # hook still there, loss not swapped back
    (ManifoldMixup, 'after_batch', RuntimeError('mid-fit failure')),
    (PatchUp, 'before_batch', KeyboardInterrupt()),
    (PatchUp, 'after_pred', RuntimeError('mid-fit failure')),
    (DynamicOutputMixup, 'after_pred', RuntimeError('mid-fit failure'))])
def test_exception_mid_fit_leaves_learner_usable(cb_cls, event, exc):
    cb = cb_cls() if cb_cls is not ManifoldMixup else ManifoldMixup(use_input_mixup=False)
    learn = _digits_learner(cb)
    orig = learn.loss_func
    fail = Fail(exc, event)
    fail.order = 5  # after the mixing callback's before_batch (hook registered) and before its after_pred
    with learn.no_bar(), learn.no_logging():
        with pytest.raises(type(exc)): learn.fit(1, 1e-2, cbs=fail)
    # an exception between after_pred and after_loss leaves the mixed loss in place until the next
    # fit/validate/get_preds, whose before_fit restores it (MixingCallback); any other leaves none
    if event != 'after_pred': assert learn.loss_func is orig
    p = learn.get_preds()[0]
    assert learn.loss_func is orig
    assert _no_hooks(learn.model)
    torch.testing.assert_close(p.sum(1), torch.ones(len(p)))
    torch.testing.assert_close(learn.get_preds()[0], p)  # nothing mixed in inference
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 3e-2)
    assert learn.loss_func is orig and learn.validate()[1] > 0.7

@pytest.mark.parametrize('make_cb', [ManifoldMixup, lambda: ManifoldMixup(per_sample=True, max_lam=True), OutputMixup,
                                     DynamicManifoldMixup, lambda: PatchUp('hard', 3), lambda: PatchUp('soft', 3)])
def test_seeded_runs_repeat_exactly(make_cb):
    def run():
        learn = _digits_learner(make_cb(), seed=42)
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
        return [p.detach().clone() for p in learn.model.parameters()]
    a, b = run(), run()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # and the callback did change training: a run with another seed differs
    learn = _digits_learner(make_cb(), seed=43)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    assert not all(torch.equal(x, y) for x, y in zip(a, learn.model.parameters()))

@pytest.mark.parametrize('cb_cls', ALL_CBS)
def test_defaults_and_pickle(cb_cls):
    cb = cb_cls()
    cb2 = pickle.loads(pickle.dumps(cb))
    assert type(cb2) is cb_cls

def test_output_mixup_refuses_regression():
    dls = digits_dls(bs=64)
    for lf in (MSELossFlat(), L1LossFlat(), nn.SmoothL1Loss()):
        learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(64, 1)), loss_func=lf, cbs=DynamicOutputMixup())
        with learn.no_bar(), learn.no_logging():
            with pytest.raises(ValueError, match='regression loss.*ManifoldMixup'): learn.fit(1)
        assert learn.loss_func is lf

def test_dynamic_schedules_train():
    for sched in (SchedLin, SchedCos, SchedNo, partial(SchedPoly, power=3),
                  combine_scheds([.4, .6], [SchedLin(0., .5), SchedCos(.5, 0.)])):
        learn = _digits_learner(DynamicManifoldMixup(0., 0.6, sched))
        rows = _fit(learn, n=3, epochs=2)
        assert len(rows) == 6 and all(np.isfinite(r['loss']) for r in rows)
    cb = DynamicManifoldMixup(1e-3, 0.6, SchedExp)
    test_close(cb.alpha_at(0.), 1e-3)
    with pytest.raises(ValueError, match='SchedExp cannot start at 0'): DynamicOutputMixup(0., 0.6, SchedExp)
    ax = DynamicOutputMixup().plot_schedule()
    assert len(ax.lines[0].get_ydata()) == 101

# ---------------------------------------------------------------------------------------------------- host syncs
_SYNCS = ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__', 'numpy', 'cpu')

class _CountSyncs(Callback):
    "Counts the conversions of tensors to Python values (host reads) from `before_batch` to `after_loss` of training batches after the first"
    order = -1000
    def __init__(self): self.counts,self.n = [],0
    def before_batch(self):
        if not self.training: return
        self.n += 1
        if self.n == 1: return  # the epoch's first batch may report its sites once
        self._patch()
        self.counts.append(0)
    def _patch(self):
        self.saved = {k: getattr(torch.Tensor, k) for k in _SYNCS}
        for k, f in self.saved.items():
            def _count(t, *args, _f=f, **kwargs):
                self.counts[-1] += 1
                return _f(t, *args, **kwargs)
            setattr(torch.Tensor, k, _count)
    def _unpatch(self):
        for k, f in getattr(self, 'saved', {}).items(): setattr(torch.Tensor, k, f)
        self.saved = {}
    def after_loss(self): self._unpatch()  # fastai's own recorder/optimizer after this point are not the callbacks'
    def after_cancel_batch(self): self._unpatch()
    def after_fit(self): self._unpatch()

@pytest.mark.parametrize('cb', [lambda: ManifoldMixup(), lambda: ManifoldMixup(per_sample=True, max_lam=True),
    lambda: OutputMixup(), lambda: DynamicManifoldMixup(), lambda: DynamicOutputMixup(),
    lambda: PatchUp(), lambda: PatchUp('soft', per_sample=True)],
    ids=['manifold', 'manifold-per_sample', 'output', 'dynamic_manifold', 'dynamic_output', 'patchup', 'patchup-soft'])
def test_no_host_reads_in_a_training_batch(cb):
    "The hook callbacks read no tensor back to the host in a training batch: on an accelerator, no synchronisation"
    from mixmo_fastai.bench import get_dls, get_model
    set_seed(0)
    dls = get_dls(bs=32, device='cpu')
    count = _CountSyncs()
    learn = Learner(dls, get_model(width=8), cbs=cb())
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=[count, _Stop(8)])
    count._unpatch()
    assert len(count.counts) >= 6 and all(c == 0 for c in count.counts), count.counts
    assert [c for c in learn.cbs if hasattr(c, 'mixed')][0].mixed is not None

class _Stop(Callback):
    order = 2000
    def __init__(self, n): self.n = n
    def after_batch(self):
        if self.training and self.iter + 1 >= self.n: raise CancelFitException()
