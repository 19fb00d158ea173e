"""What tools/setup_env.sh has to install: inspects the active Python and prints the needed steps.

Runs before torch may be installed, so it imports nothing beyond the standard library: everything that
needs torch, torchvision, mmcv, mmdet or mmpretrain is probed in a child process. The decision itself
(``plan``) is a pure function of the inspected state, tested in tests/test_tools/test_check_env.py.

What is kept: any torch, torchvision, mmcv, mmengine, mmdet and mmpretrain that mmdet 3.3 and
mmpretrain 1.2 support (the ranges below, as in setup.py) and that import and run, their compiled ops
included. Only a Python without a usable torch gets the pinned pair (torch and torchvision from the
package index); a usable torch is never replaced.

Output, one step a line on stdout (messages go to stderr)::

    registry-torch  torch==2.13.0 torchvision==0.28.0   # no usable torch: the pinned pair
    torchvision     torchvision==0.21.* torch==2.6.0     # torchvision matching the kept torch
    mmcv            mmcv==2.1.0                          # build mmcv with its ops (it is missing)
    mmcv-rebuild    mmcv==2.1.0                          # ... replacing a broken/unsupported one
    pip             mmengine==0.10.7 pycocotools onnx    # plain installs of what is missing
    editable                                             # pddr_mm from this checkout, editable

Exit status 0, or 2 (with the reason on stderr) when a step cannot be decided safely, e.g. torch is
usable but no matching torchvision can be determined. ``--verify`` prints what is still missing and
exits 1 if anything is.
"""
import argparse
import json
import os
import re
import subprocess
import sys
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

# the stack pddr_mm is tested with: installed only where nothing usable is there
PINNED = dict(torch='2.13.0', torchvision='0.28.0', mmcv='2.1.0', mmengine='0.10.7', mmdet='3.3.0',
              mmpretrain='1.2.0')
# what is kept: [low, high) (high None: no upper bound). mmdet 3.3 and mmpretrain 1.2 support
# torch >= 1.8; mmdet 3.3 needs mmcv < 2.2 and mmpretrain 1.2 mmcv >= 2.0.0; the rest as setup.py
SUPPORTED = dict(torch=('1.8', None), mmcv=('2.0.0', '2.2.0'), mmengine=('0.10.0', '1.0.0'),
                 mmdet=('3.3.0', '3.4.0'), mmpretrain=('1.2.0', '1.3.0'))
OPENMMLAB = ('mmengine', 'mmdet', 'mmpretrain')
# modules the tests and tools need besides the stack: module name -> distribution to install
EXTRAS = dict(pycocotools='pycocotools', matplotlib='matplotlib', pytest='pytest', onnx='onnx',
              onnxruntime='onnxruntime')
TORCH_INDEX = 'https://download.pytorch.org/whl'
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------------------------------------- versions
def version_key(version: str) -> Tuple:
    """A sort key for PEP 440 release versions (local labels ignored): '2.0.0rc4' < '2.0.0' < '2.0.1'."""
    m = re.match(r'^v?(\d+(?:\.\d+)*)(?:[.-]?(a|b|rc)\.?(\d+))?(?:\.?post(\d+))?(?:\.?dev(\d+))?',
                 version.strip().lower())
    if m is None:
        raise ValueError(f'not a version: {version!r}')
    release = [int(x) for x in m.group(1).split('.')]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    if m.group(2):  # pre-release: before the release
        pre = (0, 'abr'.index(m.group(2)[0]), int(m.group(3)))
    elif m.group(5) is not None and m.group(4) is None:  # X.devN: before X's pre-releases
        pre = (-1, 0, 0)
    else:
        pre = (1, 0, 0)
    post = int(m.group(4)) if m.group(4) else -1
    dev = int(m.group(5)) if m.group(5) is not None else float('inf')
    return tuple(release), pre, post, dev


def in_range(version: Optional[str], bounds: Tuple[str, Optional[str]]) -> bool:
    if version is None:
        return False
    low, high = bounds
    try:
        key = version_key(version)
    except ValueError:
        return False
    return version_key(low) <= key and (high is None or key < version_key(high))


def torchvision_series(torch_version: str) -> Optional[str]:
    """The torchvision release series built for this torch ('0.21' for torch 2.6.x), or None when it cannot
    be determined: an unknown torch, or a local build label such as '+cpu'/'+cu121', whose torchvision is
    on the index that torch came from."""
    m = re.match(r'^(\d+)\.(\d+)\.\d+[^+]*$', torch_version)
    if m is None:
        return None
    major, minor = int(m.group(1)), int(m.group(2))
    if major == 2:  # 2.0 -> 0.15, ..., 2.13 -> 0.28
        return f'0.{minor + 15}'
    if major == 1 and 8 <= minor <= 13:  # 1.8 -> 0.9, ..., 1.13 -> 0.14
        return f'0.{minor + 1}'
    return None


# ---------------------------------------------------------------------------------------------- the state
class EnvState(NamedTuple):
    """What is installed. ``versions``: distribution (or module) versions, None where absent. ``works``:
    'torch' (imports, computes), 'torchvision' (``ops.nms`` runs), 'mmcv' (``mmcv.ops.nms`` runs),
    'openmmlab' (``mmdet.models`` and ``mmpretrain.models`` import). ``modules``: whether each of
    EXTRAS is importable. ``pddr_mm``: whether ``import pddr_mm`` finds this checkout."""
    versions: Dict[str, Optional[str]]
    works: Dict[str, bool]
    modules: Dict[str, bool]
    pddr_mm: bool


class Plan(NamedTuple):
    steps: List[Tuple[str, List[str]]]
    notes: List[str]
    error: Optional[str] = None


def plan(state: EnvState) -> Plan:
    """The steps that make ``state`` a working pddr_mm environment, changing as little as possible."""
    versions, works = state.versions, state.works
    steps: List[Tuple[str, List[str]]] = []
    notes: List[str] = []

    # torch and torchvision: the pinned pair only where there is no usable torch; a usable one is kept
    torch_v, tv_v = versions.get('torch'), versions.get('torchvision')
    torch_ok = works.get('torch', False) and in_range(torch_v, SUPPORTED['torch'])
    if not torch_ok:
        if torch_v is None:
            why = 'torch is not installed'
        elif not works.get('torch', False):
            why = f'torch {torch_v} is installed but does not import/run'
        else:
            why = f'torch {torch_v} is older than mmdet 3.3 and mmpretrain 1.2 support (>= 1.8)'
        notes.append(f'{why}: installing torch {PINNED["torch"]} + torchvision {PINNED["torchvision"]} from the '
                     'package index (a few minutes; for a GPU build install your own torch first, see docs/install.md)')
        steps.append(('registry-torch', [f'torch=={PINNED["torch"]}', f'torchvision=={PINNED["torchvision"]}']))
    elif works.get('torchvision', False):
        notes.append(f'torch {torch_v}, torchvision {tv_v} (ops.nms runs): present, kept')
    else:
        problem = (f'torchvision {tv_v} is installed but torchvision.ops.nms does not run with torch {torch_v}'
                   if tv_v else f'torchvision is not installed (torch {torch_v} is)')
        series = torchvision_series(torch_v)
        if series is None:
            base, _, label = torch_v.partition('+')
            hint = (f'pip install "torchvision==<the release for torch {base}>" --index-url {TORCH_INDEX}/{label}'
                    if label else f'install the torchvision release built for torch {base}')
            return Plan(steps, notes, f'{problem}, and which torchvision matches torch {torch_v} cannot be '
                        f'determined here. Your torch is kept: {hint} '
                        '(see https://pytorch.org/get-started/previous-versions/), then run this script again.')
        if tv_v is not None and tv_v.split('+')[0].startswith(series + '.'):
            return Plan(steps, notes, f'{problem}, although {tv_v} is the release series for torch {torch_v}: it '
                        'is a build for another torch or CUDA. Your torch is kept: reinstall torchvision from the '
                        'index your torch came from, then run this script again.')
        notes.append(f'{problem}: installing torchvision {series}.* for it (torch {torch_v} is kept)')
        steps.append(('torchvision', [f'torchvision=={series}.*', f'torch=={torch_v}']))

    # mmcv with its compiled ops, built against the torch the steps above leave
    mmcv_v = versions.get('mmcv')
    if torch_ok and works.get('mmcv', False) and in_range(mmcv_v, SUPPORTED['mmcv']):
        notes.append(f'mmcv {mmcv_v} with compiled ops: present, kept')
    elif mmcv_v is None:
        notes.append(f'mmcv is not installed: building mmcv {PINNED["mmcv"]} with its ops (about 8 minutes on '
                     '2 cores, cached afterwards)')
        steps.append(('mmcv', [f'mmcv=={PINNED["mmcv"]}']))
    else:
        why = ('is outside what mmdet 3.3 and mmpretrain 1.2 support (>=2.0.0, <2.2.0)'
               if not in_range(mmcv_v, SUPPORTED['mmcv']) else
               'was built for the torch being replaced' if not torch_ok else
               'is installed but its compiled ops (mmcv.ops) do not work')
        notes.append(f'mmcv {mmcv_v} {why}: rebuilding mmcv {PINNED["mmcv"]} with its ops against the torch '
                     'above (about 8 minutes on 2 cores)')
        steps.append(('mmcv-rebuild', [f'mmcv=={PINNED["mmcv"]}']))
    stack_changes = bool(steps)

    # mmengine, mmdet, mmpretrain: kept when in range; pinned where missing or out of range
    to_pip = []
    for name in OPENMMLAB:
        v = versions.get(name)
        if not in_range(v, SUPPORTED[name]):
            lo, hi = SUPPORTED[name]
            notes.append(f'{name} {v + " is outside >=" + lo + ",<" + hi if v else "is not installed"}: '
                         f'installing {name} {PINNED[name]}')
            to_pip.append(f'{name}=={PINNED[name]}')
    kept = [f'{n} {versions[n]}' for n in OPENMMLAB if in_range(versions.get(n), SUPPORTED[n])]
    if not to_pip and works.get('openmmlab', False):
        notes.append(', '.join(kept) + ': present, kept')
    elif not to_pip and not stack_changes:
        # the versions are right but mmdet.models/mmpretrain.models do not import: let pip fill in
        # missing dependencies of the installed versions (it changes nothing that is satisfied)
        notes.append(', '.join(kept) + ': installed, but mmdet.models / mmpretrain.models do not import: '
                     'installing their missing dependencies')
        to_pip = [f'{n}=={versions[n]}' for n in OPENMMLAB]

    # what the tests and tools import besides the stack
    missing = [dist for mod, dist in EXTRAS.items() if not state.modules.get(mod, False)]
    notes.append(('installing ' + ', '.join(missing)) if missing else (', '.join(EXTRAS) + ': present'))
    if to_pip or missing:
        steps.append(('pip', to_pip + missing))

    if state.pddr_mm:
        notes.append('pddr_mm: imported from this checkout')
    else:
        notes.append('installing pddr_mm from this checkout (pip install -e .)')
        steps.append(('editable', []))
    return Plan(steps, notes)


# ---------------------------------------------------------------------------------------------- inspection
# run by the inspected Python from '/': one JSON line per check, so that a crash (a compiled op built for
# another torch can take the process down) still leaves the checks before it
_PROBE = r'''
import importlib.metadata as md, importlib.util as iu, json, sys
names, extras = sys.argv[1].split(','), sys.argv[2].split(',')

def report(check, ok, **info):
    print(json.dumps(dict(check=check, ok=ok, **info)), flush=True)

def dist(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None

spec = iu.find_spec('pddr_mm')
report('meta', True, versions={n: dist(n) for n in names}, modules={m: iu.find_spec(m) is not None for m in extras},
       pddr_mm=spec.origin if spec is not None else None)

def torch_():
    import torch
    x = torch.ones(2, 2)
    assert float((x @ x).sum()) == 8.0
    return torch.__version__

def torchvision_():
    import torch, torchvision
    torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    return torchvision.__version__

def mmcv_():
    import torch, mmcv, mmcv.ops
    mmcv.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    return mmcv.__version__

def openmmlab_():
    import mmdet.models, mmpretrain.models  # noqa

for check, fn in (('torch', torch_), ('torchvision', torchvision_), ('mmcv', mmcv_), ('openmmlab', openmmlab_)):
    try:
        report(check, True, version=fn())
    except BaseException as e:  # noqa: B036  (SystemExit from a failing import guard too)
        report(check, False, error=f'{type(e).__name__}: {e}'[:500])
'''


def inspect_env(python: str = sys.executable, repo: str = REPO,
                timeout: float = 600) -> Tuple[EnvState, Dict[str, str]]:
    """The state of the Python ``python`` and the error of each failed check. It is probed in a child
    process started from '/', so that this checkout does not shadow what is installed."""
    names = ('torch', 'torchvision', 'mmcv', 'mmengine', 'mmdet', 'mmpretrain')
    cmd = [python, '-c', _PROBE, ','.join(names), ','.join(EXTRAS)]
    try:
        out = subprocess.run(cmd, cwd='/', stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             timeout=timeout).stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or '')
    except OSError as e:
        out = ''
        print(f'[setup_env] cannot run {python}: {e}', file=sys.stderr)
    versions: Dict[str, Optional[str]] = {n: None for n in names}
    works: Dict[str, bool] = {}
    errors: Dict[str, str] = {}
    modules: Dict[str, bool] = {}
    origin = None
    for line in out.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # anything the imports print
            continue
        if not isinstance(rec, dict) or 'check' not in rec:
            continue
        if rec['check'] == 'meta':
            versions.update(rec['versions'])
            modules, origin = rec['modules'], rec['pddr_mm']
            continue
        works[rec['check']] = rec['ok']
        if rec['ok'] and rec.get('version') and rec['check'] in versions and versions[rec['check']] is None:
            # the distribution's version is what pip matches (the index's torch 2.13.0 says '2.13.0+cu130'
            # in torch.__version__); the module's own only where there is no metadata
            versions[rec['check']] = rec['version']
        elif not rec['ok']:
            errors[rec['check']] = rec.get('error', '')
    for check in ('torch', 'torchvision', 'mmcv', 'openmmlab'):
        if check not in works:
            works[check] = False
            errors.setdefault(check, 'not checked: the check process stopped before it')
    here = os.path.realpath(os.path.join(repo, 'pddr_mm', '__init__.py'))
    pddr_ok = origin is not None and os.path.realpath(origin) == here
    return EnvState(versions, works, modules, pddr_ok), errors


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--python', default=sys.executable, help='the Python to inspect (default: this one)')
    parser.add_argument('--verify', action='store_true', help='print what is still missing; exit 1 if anything is')
    args = parser.parse_args(argv)
    state, errors = inspect_env(args.python)
    result = plan(state)

    def say(msg: str) -> None:
        print(f'[setup_env] {msg}', file=sys.stderr, flush=True)

    for note in result.notes:
        say(note)
    for check, err in errors.items():
        if check == 'torch' or state.works.get('torch'):  # without torch every later check fails anyway
            say(f'  {check} check failed: {err}')
    if result.error:
        say('ERROR: ' + result.error)
        return 2
    if args.verify:
        if result.steps:
            say('still not working: ' + '; '.join(' '.join([s] + a) for s, a in result.steps))
            return 1
        return 0
    for step, step_args in result.steps:
        print(' '.join([step] + step_args), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
