"Write README.md from nbs/index.ipynb (nbdev's own `nbdev-readme` needs Quarto, which cannot be installed offline)."
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import results

def _hidden(src): return any(l.strip() in ('#| hide', '#|hide') for l in src.splitlines())

def render(nb_path=root/'nbs'/'index.ipynb'):
    nb = json.loads(Path(nb_path).read_text())
    parts = ["<!-- WARNING: generated from nbs/index.ipynb by tools/make_readme.py; edit the notebook -->"]
    for cell in nb['cells']:
        src = ''.join(cell['source'])
        if _hidden(src) or not src.strip(): continue
        # the notebook links its pictures from nbs/, as the docs site does; the README from the repository's root
        if cell['cell_type'] == 'markdown':
            # the results tables from their files; links to the docs pages point at the site
            src = results.fill(src).replace('](images/', '](nbs/images/')
            parts.append(results.site_links(src))
        elif cell['cell_type'] == 'code':
            parts.append(f"```python\n{src}\n```")
            for out in cell.get('outputs', []):
                text = out.get('text') or out.get('data', {}).get('text/plain')
                if text and 'text/markdown' not in out.get('data', {}): parts.append("```\n" + ''.join(text).rstrip() + "\n```")
                md = out.get('data', {}).get('text/markdown')
                if md: parts.append(''.join(md))
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    text = render()
    if '--check' in sys.argv:
        if (root/'README.md').read_text() != text: sys.exit("README.md is out of date: run `python tools/make_readme.py`")
    else: (root/'README.md').write_text(text)
