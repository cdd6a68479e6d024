"What a released package carries: its license, how to cite it, its changes, the versions CI tests."
import re, sys
from importlib.metadata import version
import yaml
import mixmo_fastai
from helpers import ROOT

def test_license_is_apache():
    text = (ROOT/'LICENSE').read_text()
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text and 'END OF TERMS AND CONDITIONS' in text
    assert 'license = "Apache-2.0"' in (ROOT/'pyproject.toml').read_text()

def test_citation_names_the_package_and_the_papers():
    cff = yaml.safe_load((ROOT/'CITATION.cff').read_text())
    assert cff['cff-version'] and str(cff['version']) == mixmo_fastai.__version__
    titles = ' '.join(r['title'] for r in cff['references'])
    for paper in ('MixMo', 'independent subnetworks', 'Manifold Mixup', 'PatchUp', 'Neural Network Subspaces', 'Packed-Ensembles'):
        assert paper in titles, paper
    readme = (ROOT/'README.md').read_text()
    assert all(k in readme for k in ('@software{mixmo_fastai', 'rame2021mixmo', 'havasi2021mimo', 'verma2019manifold',
                                     'faramarzi2022patchup', 'wortsman2021subspaces', 'laurent2023packed', f"version = {{{mixmo_fastai.__version__}}}"))

def test_changelog_starts_with_this_version():
    log = (ROOT/'CHANGELOG.md').read_text()
    versions = re.findall(r'^## (\d+\.\d+\.\d+)', log, re.M)
    assert versions[0] == mixmo_fastai.__version__ and versions[-1] == '0.0.1'

def test_versions_table_is_what_ci_installs():
    "The README's table of tested versions: the major.minor versions installed by `pip install -e '.[dev]'` (CI's)"
    readme = (ROOT/'README.md').read_text()
    head = '| Python | torch | torchvision | fastai | fastcore | timm | accelerate |'
    lines = readme[readme.index(head):].splitlines()
    names, values = [c.strip() for c in lines[0].strip('|').split('|')], [c.strip() for c in lines[2].strip('|').split('|')]
    mm = lambda v: '.'.join(re.match(r'\d+\.\d+', v)[0].split('.')[:2])
    installed = {n: (f'{sys.version_info[0]}.{sys.version_info[1]}' if n == 'Python' else mm(version(n))) for n in names}
    assert dict(zip(names, values)) == installed
