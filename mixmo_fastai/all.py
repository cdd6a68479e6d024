"Every public name of mixmo_fastai, the fastai way: `from mixmo_fastai.all import *`"
# Hand-written (not generated): add a line here when a notebook creates a new module. The benchmark (`bench`) and
# the command line (`cli`) are edges built on these: import them by name (`mixmo_fastai.bench.run_bench`).
from .mixing import *
from .surgery import *
from .callback import *
from .data import *
from .manifold import *
from .metrics import *
from .mixmo import *
from .mixmo_data import *
from .packed import *
from .subspace import *
from .swa import *
from .shift import *
