"""The `mixmo-fastai` console script (hand-written, not generated).

The command line promises one-line errors on stderr, which torch's own deprecation notices (raised when fastai and
torch are imported, and by some torch functions) would break: this entry point silences them in the command line's
own process, before anything is imported. Importing `mixmo_fastai.cli` from a notebook or a script leaves the
user's warning filters alone."""
import warnings

def main(argv=None):
    "Run `mixmo_fastai.cli.main` with torch's FutureWarnings and UserWarnings silenced"
    warnings.filterwarnings('ignore', category=FutureWarning, module=r'torch\.')
    warnings.filterwarnings('ignore', category=UserWarning, module=r'torch\.')
    from .cli import main as cli_main
    return cli_main(argv)

if __name__ == '__main__': main()
