"""What each callback does with bad input: a clear refusal before any training step, the model left as it was.

Each row of the table in the README is a test here. `_refused` is the contract for a refusal: the error says what
was wrong (its message matches `match`), no training batch ran, and the model's modules and weights are unchanged.
`works` rows are inputs that are accepted by design (said in the docs)."""
import re
import pytest, torch
from fastai.vision.all import *
from mixmo_fastai.all import *
from helpers import subset_dls, xfail, known_defect_cases

# ---------------------------------------------------------------------------------------------------- helpers
def _subset_dls(n_train=128, n_valid=64, bs=64, **kwargs): return subset_dls(n_train, n_valid, bs, **kwargs)

@pytest.fixture(scope='module')
def dls(): return _subset_dls()

class _Count(Callback):
    "Training batches started and optimizer steps taken"
    order = -100
    def __init__(self): self.batches,self.steps = 0,0
    def before_batch(self):
        if self.training: self.batches += 1
    def after_step(self): self.steps += 1

def _copy(v): return None if isinstance(v, nn.parameter.UninitializedTensorMixin) else v.detach().clone()
def _snapshot(model): return [type(m) for m in model.modules()], {k: _copy(v) for k, v in model.state_dict().items()}

def _unchanged(model, snap):
    types, sd = snap
    assert [type(m) for m in model.modules()] == types, "the model was (half-)converted"
    new = model.state_dict()
    assert new.keys() == sd.keys(), "the model's parameters changed"
    assert all(torch.equal(_copy(new[k]), sd[k]) for k in sd if sd[k] is not None), "the model's weights changed"

def _run(dls, model, make_cbs, loss_func=None, n_epoch=1):
    "Create the callbacks and the `Learner` (conversion happens there), then fit; returns the learner and the counter"
    count = _Count()
    learn = Learner(dls, model, loss_func=loss_func, cbs=make_cbs())
    with learn.no_bar(), learn.no_logging(): learn.fit(n_epoch, 1e-2, cbs=count)
    return learn, count

def _refused(dls, make_model, make_cbs, match, loss_func=None, exc=(ValueError, TypeError)):
    "The callback refuses with an error matching `match` before any training step, the model untouched"
    set_seed(0)
    model = make_model()
    snap, count = _snapshot(model), _Count()
    with pytest.raises(exc, match=match):
        learn = Learner(dls, model, loss_func=loss_func, cbs=make_cbs())
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2, cbs=count)
    # before any optimizer step (at creation, `before_fit`, or at the latest in the first batch's `before_batch`)
    assert count.steps == 0 and count.batches <= 1, f"refused only after {count.steps} step(s)"
    _unchanged(model, snap)

def _works(dls, make_model, make_cbs, loss_func=None):
    "Accepted by design: training runs and the losses are finite"
    set_seed(0)
    learn, count = _run(dls, make_model(), make_cbs, loss_func)
    assert count.steps > 0
    assert all(math.isfinite(float(l)) for l in learn.recorder.losses)
    return learn

def cases(values, known:dict, ids=None): return known_defect_cases(values, known, ids, sep='-')

net = lambda: digits_net(16)
def mlp(): return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
def conv_no_head(): return nn.Sequential(nn.Conv2d(1, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
def one_by_one():
    "The first convolution (MixMo's encoder) and every hidden map are 1x1"
    return nn.Sequential(nn.Conv2d(1, 16, 8), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16, 10))

MANIFOLD = ['ManifoldMixup', 'OutputMixup', 'PatchUp']
MIXMO = ['CutMixMo', 'LinearMixMo', 'MIMO']
SUBSPACE = ['LinesSubspace', 'CurvesSubspace', 'SimplexSubspace']
cls = lambda n: globals()[n]

# ---------------------------------------------------------------------------------------------------- alpha < 0
_ALPHA = [(n, a) for n in MANIFOLD for a in (-1., float('nan'))]
_ALPHA_IDS = [f'{n}-{a}' for n, a in _ALPHA]
_ALPHA_KNOWN = {}  # D13 fixed: alpha < 0 and nan refused at construction

@pytest.mark.parametrize('name,alpha', cases(_ALPHA, _ALPHA_KNOWN, _ALPHA_IDS))
def test_alpha_below_zero_refused(name, alpha, dls):
    _refused(dls, net, lambda: [cls(name)(alpha=alpha)], match='alpha')

@pytest.mark.parametrize('make', [lambda: DynamicManifoldMixup(alpha_min=-1.), lambda: DynamicManifoldMixup(alpha_max=-1.),
                                  lambda: DynamicOutputMixup(alpha_min=-1.), lambda: DynamicOutputMixup(alpha_max=-1.)])
def test_dynamic_alpha_below_zero_refused(make, dls):
    _refused(dls, net, lambda: [make()], match='alpha')

@pytest.mark.parametrize('name', ['CutMixMo', 'LinearMixMo'])
def test_mixmo_alpha_at_or_below_zero_gives_equal_ratios(name, dls):
    "By design (documented): MixMo's `alpha <= 0` gives equal ratios, as MIMO's default `alpha=0`"
    cb = cls(name)(alpha=-1., box_prob=0.)
    masks = []
    class Rec(Callback):
        order = 1
        def before_batch(self):
            if self.training: masks.append(cb.encoders.state.masks.clone())
    learn = _works(dls, net, lambda: [cb, Rec()])
    assert masks and all(torch.allclose(m, torch.full_like(m, 0.5)) for m in masks)

# ---------------------------------------------------------------------------------------------------- members
@pytest.mark.parametrize('name', MIXMO)
@pytest.mark.parametrize('n', [1, 0])
def test_n_members_below_two_refused(name, n, dls):
    _refused(dls, net, lambda: [cls(name)(n_members=n)], match='at least 2 members')
    with pytest.raises(ValueError, match='at least 2 members'): mixmo_model(net(), n_members=n)

def test_simplex_with_one_corner_refused(dls):
    _refused(dls, net, lambda: [SimplexSubspace(n_points=1)], match='at least 2 corners')

@pytest.mark.parametrize('rep', [0, -1])
def test_batch_repetition_below_one_refused(rep):
    with pytest.raises(ValueError, match='batch_repetition'): digits_mixmo_dls(n_members=2, batch_repetition=rep)

def test_batch_not_multiple_of_repetition_refused():
    with pytest.raises(ValueError, match='multiple of batch_repetition'): digits_mixmo_dls(bs=6, batch_repetition=4)

@pytest.mark.parametrize('name', MIXMO)
def test_batch_smaller_than_members_refused(name):
    "With an ordinary loader the members read permutations of the batch: 3 members cannot see different samples of 2"
    small = _subset_dls(n_train=8, n_valid=8, bs=2)
    _refused(small, net, lambda: [cls(name)(n_members=3)], match='batch')

# ---------------------------------------------------------------------------------------------------- model shape
@pytest.mark.parametrize('name', MIXMO)
@pytest.mark.parametrize('make,match', [(mlp, 'no convolution'), (conv_no_head, 'final nn.Linear')], ids=['no-conv', 'no-head'])
def test_mixmo_needs_conv_and_linear_head(name, make, match, dls):
    _refused(dls, make, lambda: [cls(name)()], match=match)

@pytest.mark.parametrize('name', ['ManifoldMixup', 'PatchUp'] + SUBSPACE)
def test_mlp_is_accepted(name, dls):
    "By design: hidden-layer mixing and subspaces need no convolution (the sites are the leaf modules; every Linear is converted)"
    _works(dls, mlp, lambda: [cls(name)()])

def test_no_site_refused(dls):
    "A model whose only parametrised leaf is the output layer has no hidden site: refused before the first step"
    model = lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    _refused(dls, model, lambda: [ManifoldMixup(use_input_mixup=False)], match='no site')

# ---------------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize('name', MIXMO)
@pytest.mark.parametrize('kw', [dict(encoder='nope'), dict(head='nope'), dict(encoder='1.convpath.0', head='nope')])
def test_mixmo_unknown_module_name_refused(name, kw, dls):
    "The message names the missing module and lists the model's names (what to pass instead)"
    _refused(dls, net, lambda: [cls(name)(**kw)], match=r"no module named 'nope'.*names start with")

def test_mixmo_head_that_is_not_linear_refused(dls):
    _refused(dls, net, lambda: [CutMixMo(head='0')], match='final nn.Linear')

@pytest.mark.parametrize('name', cases(['ManifoldMixup', 'PatchUp'], {}))
def test_module_list_with_a_name_refused(name, dls):
    "`module_list` takes modules; a string (or any non-module) must be refused with a message, not fail in a hook"
    _refused(dls, net, lambda: [cls(name)(module_list=['nope'])], match='module_list')

@pytest.mark.parametrize('name', cases(['ManifoldMixup', 'PatchUp'], {}))
def test_module_list_with_a_module_not_in_the_model_refused(name, dls):
    "A module that is not part of the model would never be called: nothing would be mixed, silently"
    _refused(dls, net, lambda: [cls(name)(module_list=[nn.Conv2d(1, 1, 1)], use_input_mixup=False)], match='module_list')

# ---------------------------------------------------------------------------------------------------- losses
_REG = [(n, l) for n in ['OutputMixup', 'DynamicOutputMixup'] + MIXMO for l in (MSELossFlat, L1LossFlat)]
_REG_IDS = [f'{n}-{l.__name__}' for n, l in _REG]
@pytest.mark.parametrize('name,loss', _REG, ids=_REG_IDS)
def test_regression_loss_refused_where_classification_is_needed(name, loss, dls):
    _refused(dls, net, lambda: [cls(name)()], match='regression|classification', loss_func=loss())

@pytest.fixture(scope='module')
def reg_dls():
    "A regression task on the digits: predict the mean brightness of the image (a float target per sample)"
    set_seed(0)
    x = torch.randn(192, 1, 8, 8)
    y = x.mean((1, 2, 3))[:, None] + 0.1
    ds = [(TensorImage(x[i]), y[i]) for i in range(len(x))]
    return DataLoaders.from_dsets(ds[:128], ds[128:], bs=64, device='cpu')

@pytest.mark.parametrize('name', ['ManifoldMixup', 'PatchUp'] + SUBSPACE)
def test_regression_loss_accepted_by_hidden_mixing_and_subspaces(name, reg_dls):
    "By design: hidden-layer mixing interpolates float targets; subspaces do not touch the loss"
    learn = _works(reg_dls, lambda: digits_net(16, n_out=1), lambda: [cls(name)()], loss_func=MSELossFlat())
    preds, targs = learn.get_preds()
    assert preds.shape == targs.shape == (64, 1)

# ---------------------------------------------------------------------------------------------------- 1x1 maps
@pytest.mark.parametrize('name', ['CutMixMo'])
def test_box_masks_on_1x1_features_refused(name, dls):
    "A box mask on a 1x1 map gives one member everything: CutMixMo's boxes cannot work there"
    _refused(dls, one_by_one, lambda: [cls(name)(box_prob=1.)], match='1x1|spatial|box')

def test_linear_mixmo_on_1x1_features_works(dls):
    "Constant masks need no spatial extent: LinearMixMo/MIMO train on 1x1 encoder outputs"
    _works(dls, one_by_one, lambda: [LinearMixMo()])

# ---------------------------------------------------------------------------------------------------- non-finite
class _PoisonInput(Callback):
    "Put a NaN (or an inf) into one image of the second training batch, before any mixing callback runs"
    order = -50
    def __init__(self, value, at=2): self.value,self.at,self.n = value,at,0
    def before_batch(self):
        if not self.training: return
        self.n += 1
        if self.n == self.at:
            x = self.learn.xb[0].clone()
            x[0, 0, 0, 0] = self.value
            self.learn.xb = (x,)

ALL = MANIFOLD + ['DynamicManifoldMixup', 'DynamicOutputMixup'] + MIXMO + SUBSPACE

_NF = [(n, v) for n in ALL for v in (float('nan'), float('inf'))]
_NF_IDS = [f'{n}-{v}' for n, v in _NF]

@pytest.mark.parametrize('name,value', cases(_NF, {}, _NF_IDS))
def test_non_finite_input_refused(name, value, dls):
    "A non-finite input is reported before the optimizer step that would spread it into every weight"
    set_seed(0)
    learn = Learner(dls, net(), cbs=cls(name)())
    count = _Count()
    with pytest.raises((ValueError, RuntimeError), match='finite|nan|inf'):
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2, cbs=[count, _PoisonInput(value)])
    assert count.steps == 1
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())

@pytest.mark.parametrize('name', MIXMO + SUBSPACE)
@pytest.mark.parametrize('added', ['at_creation', 'to_fit'])
def test_refused_first_batch_puts_the_model_back(name, added, dls):
    "A converting callback whose first training batch is refused leaves the model as it was: the learner trains without it"
    set_seed(0)
    model, count = net(), _Count()
    snap = _snapshot(model)
    learn = Learner(dls, model, cbs=cls(name)() if added == 'at_creation' else None)
    cbs = [count, _PoisonInput(float('nan'), at=1)] + ([cls(name)()] if added == 'to_fit' else [])
    with pytest.raises((ValueError, RuntimeError), match='finite|nan|inf'):
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2, cbs=cbs)
    assert count.steps == 0 and learn.model is model
    _unchanged(model, snap)
    if added == 'at_creation': learn.remove_cb(learn.cbs.filter(lambda c: type(c).__name__ == name)[0])
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())

def test_refused_first_batch_undoes_every_conversion():
    "MixMo and a line of its converted model (a supported pairing): a refused first batch puts back both conversions"
    dls = _subset_dls()
    set_seed(0)
    model = net()
    snap = _snapshot(model)
    learn = Learner(dls, model, cbs=[CutMixMo(), LinesSubspace()])
    with pytest.raises((ValueError, RuntimeError), match='finite|nan|inf'):
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2, cbs=_PoisonInput(float('nan'), at=1))
    assert learn.model is model
    _unchanged(model, snap)
    # the next fit converts again, the line made of the MixMo model as at creation
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    enc, _ = mixmo_parts(learn.model)
    assert enc is not None and any(isinstance(m, SubspaceLayer) for m in enc.modules())

# ---------------------------------------------------------------------------------------------------- subspace conversion
class _OwnParam(Module):
    "A model with parameters but no layer `to_subspace` converts"
    def __init__(self): self.w = nn.Parameter(torch.randn(64, 10) / 8)
    def forward(self, x): return x.flatten(1) @ self.w

@pytest.mark.parametrize('name', SUBSPACE)
def test_nothing_to_convert_refused(name, dls):
    _refused(dls, _OwnParam, lambda: [cls(name)()], match='no Conv1d/2d/3d, Linear or BatchNorm')

@pytest.mark.parametrize('name', SUBSPACE)
def test_uninitialised_lazy_layer_refused(name, dls):
    "A lazy layer cannot be converted before its first call: converting the rest would leave a half-subspace model"
    lazy = lambda: nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    _refused(dls, lazy, lambda: [cls(name)()], match='[Ll]azy')
