"""tools/misc/check_env.py decides what tools/setup_env.sh installs: faked environments, no installs.

The rule under test: a usable torch (and torchvision, mmcv, mmengine, mmdet, mmpretrain in the supported
ranges whose compiled ops run) is never replaced; only a Python without a usable torch gets the pinned pair.
"""
import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location('check_env', REPO / 'tools' / 'misc' / 'check_env.py')
check_env = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_env)
P = check_env.PINNED
EXTRAS = list(check_env.EXTRAS)


def state(torch=P['torch'], torchvision=P['torchvision'], mmcv=P['mmcv'], mmengine=P['mmengine'],
          mmdet=P['mmdet'], mmpretrain=P['mmpretrain'], works=(), broken=(), missing_modules=(), pddr_mm=True):
    """A faked environment: by default the pinned stack, everything working. ``broken`` lists the checks
    that fail ('torch', 'torchvision', 'mmcv', 'openmmlab'); a missing package's checks fail too."""
    versions = dict(torch=torch, torchvision=torchvision, mmcv=mmcv, mmengine=mmengine, mmdet=mmdet,
                    mmpretrain=mmpretrain)
    ok = {c: c not in broken for c in ('torch', 'torchvision', 'mmcv', 'openmmlab')}
    for check, needs in dict(torch=['torch'], torchvision=['torch', 'torchvision'], mmcv=['torch', 'mmcv'],
                             openmmlab=['torch', 'mmcv', 'mmengine', 'mmdet', 'mmpretrain']).items():
        if any(versions[n] is None for n in needs):
            ok[check] = False
    modules = {m: m not in missing_modules for m in EXTRAS}
    return check_env.EnvState(versions, ok, modules, pddr_mm)


def steps(s):
    result = check_env.plan(s)
    assert result.error is None, result.error
    return dict(result.steps)


def torch_requirements(plan_steps):
    return [a for args in plan_steps.values() for a in args if a.startswith('torch==')]


def test_working_environment_needs_nothing():
    assert steps(state()) == {}


@pytest.mark.parametrize('torch_v,tv_v,mmcv_v', [
    ('2.1.2+cu121', '0.16.2+cu121', '2.1.0'),  # a GPU user's own CUDA build, mmcv from mim
    ('2.5.1', '0.20.1', '2.0.1'),
    ('1.13.1+cu117', '0.14.1+cu117', '2.0.0'),
    ('2.13.0+cpu', '0.28.0+cpu', '2.1.0'),
])
def test_supported_stacks_are_kept(torch_v, tv_v, mmcv_v):
    s = state(torch=torch_v, torchvision=tv_v, mmcv=mmcv_v, mmengine='0.10.4', mmdet='3.3.0', mmpretrain='1.2.0')
    assert steps(s) == {}
    notes = '\n'.join(check_env.plan(s).notes)
    assert f'torch {torch_v}' in notes and 'kept' in notes


def test_fresh_machine_gets_the_pinned_stack():
    s = state(torch=None, torchvision=None, mmcv=None, mmengine=None, mmdet=None, mmpretrain=None,
              missing_modules=EXTRAS, pddr_mm=False)
    got = check_env.plan(s).steps
    assert [name for name, _ in got] == ['registry-torch', 'mmcv', 'pip', 'editable']
    got = dict(got)
    assert got['registry-torch'] == [f'torch=={P["torch"]}', f'torchvision=={P["torchvision"]}']
    assert got['mmcv'] == [f'mmcv=={P["mmcv"]}']
    assert got['pip'] == [f'mmengine=={P["mmengine"]}', f'mmdet=={P["mmdet"]}', f'mmpretrain=={P["mmpretrain"]}',
                          'pycocotools', 'matplotlib', 'pytest', 'onnx', 'onnxruntime']


def test_broken_or_too_old_torch_gets_the_pinned_pair_and_a_fresh_mmcv():
    got = steps(state(torch='2.4.0', broken=('torch', )))
    assert got['registry-torch'][0] == f'torch=={P["torch"]}'
    assert got['mmcv-rebuild'] == [f'mmcv=={P["mmcv"]}']  # mmcv's ops were built for the old torch
    got = steps(state(torch='1.7.1', torchvision='0.8.2', mmcv='2.1.0'))  # works, but unsupported
    assert 'registry-torch' in got and 'mmcv-rebuild' in got


@pytest.mark.parametrize('torch_v,series', [('2.6.0', '0.21'), ('2.13.0', '0.28'), ('2.0.1', '0.15'),
                                            ('1.13.1', '0.14'), ('1.8.0', '0.9')])
def test_missing_torchvision_matches_the_kept_torch(torch_v, series):
    got = steps(state(torch=torch_v, torchvision=None))
    assert got == {'torchvision': [f'torchvision=={series}.*', f'torch=={torch_v}']}


def test_mismatched_torchvision_is_replaced_for_the_kept_torch():
    got = steps(state(torch='2.6.0', torchvision='0.15.2', broken=('torchvision', )))
    assert got == {'torchvision': ['torchvision==0.21.*', 'torch==2.6.0']}


@pytest.mark.parametrize('torch_v,tv_v,hint', [
    ('2.1.2+cu121', None, 'https://download.pytorch.org/whl/cu121'),  # local build: its own index
    ('2.6.0', '0.21.0', 'another torch or CUDA'),  # the right series, yet broken
    ('3.0.0', None, 'install the torchvision release built for torch 3.0.0'),  # unknown pairing
])
def test_undecidable_torchvision_stops_and_keeps_torch(torch_v, tv_v, hint):
    broken = ('torchvision', ) if tv_v else ()
    result = check_env.plan(state(torch=torch_v, torchvision=tv_v, broken=broken))
    assert result.error is not None and hint in result.error and 'torch is kept' in result.error
    assert not any(name == 'registry-torch' for name, _ in result.steps)


@pytest.mark.parametrize('mmcv_v,broken,step', [
    ('2.1.0', ('mmcv', ), 'mmcv-rebuild'),  # ops do not import (built for another torch)
    ('2.2.0', (), 'mmcv-rebuild'),  # mmdet 3.3 rejects it
    ('1.7.2', (), 'mmcv-rebuild'),
    (None, (), 'mmcv'),
])
def test_mmcv_is_built_only_when_unusable(mmcv_v, broken, step):
    got = steps(state(mmcv=mmcv_v, broken=broken))
    assert got[step] == [f'mmcv=={P["mmcv"]}']
    assert 'registry-torch' not in got and not torch_requirements(got)


@pytest.mark.parametrize('mmcv_v', ['2.0.0', '2.0.1', '2.1.0'])
def test_supported_mmcv_is_kept(mmcv_v):
    assert steps(state(mmcv=mmcv_v)) == {}


def test_only_the_unsupported_openmmlab_package_is_installed():
    got = steps(state(mmdet='3.2.0', broken=('openmmlab', )))
    assert got == {'pip': [f'mmdet=={P["mmdet"]}']}
    got = steps(state(mmengine=None, mmpretrain='1.1.0'))
    assert got == {'pip': [f'mmengine=={P["mmengine"]}', f'mmpretrain=={P["mmpretrain"]}']}


def test_openmmlab_import_failure_fills_in_dependencies_of_the_same_versions():
    got = steps(state(mmengine='0.10.3', broken=('openmmlab', )))
    assert got == {'pip': ['mmengine==0.10.3', f'mmdet=={P["mmdet"]}', f'mmpretrain=={P["mmpretrain"]}']}


def test_extras_and_pddr_mm_only_when_missing():
    assert steps(state(missing_modules=('onnx', 'onnxruntime'))) == {'pip': ['onnx', 'onnxruntime']}
    assert steps(state(pddr_mm=False)) == {'editable': []}


@pytest.mark.parametrize('torch_v', ['1.8.0', '1.13.1+cu117', '2.0.0', '2.1.2+cu121', '2.6.0', '2.13.0', '2.13.0+cpu'])
def test_a_usable_torch_is_never_replaced(torch_v):
    """Whatever else is missing or broken, a usable torch gets no install but ``torch==<itself>``."""
    for tv in (None, '0.1.0'):
        for mmcv in (None, '2.1.0', '2.2.0'):
            for broken in ((), ('torchvision', ), ('mmcv', 'openmmlab')):
                s = state(torch=torch_v, torchvision=tv, mmcv=mmcv, broken=broken, missing_modules=EXTRAS)
                result = check_env.plan(s)
                assert not any(name == 'registry-torch' for name, _ in result.steps)
                assert set(torch_requirements(dict(result.steps))) <= {f'torch=={torch_v}'}


def test_version_order():
    key = check_env.version_key
    assert key('2.0.0rc4') < key('2.0.0') == key('2.0') < key('2.0.1') < key('2.1.0') < key('2.13.0')
    assert key('2.0.0.dev1') < key('2.0.0a1') < key('2.0.0b1') < key('2.0.0rc1') < key('2.0.0.post1')
    assert key('2.1.2+cu121') == key('2.1.2')
    rng = check_env.SUPPORTED['mmcv']
    assert [check_env.in_range(v, rng) for v in ('2.0.0rc4', '2.0.0', '2.1.0', '2.2.0', None, 'weird')] == \
        [False, True, True, False, False, False]


def test_torchvision_series():
    series = check_env.torchvision_series
    assert series('2.13.0') == '0.28' and series('2.0.1') == '0.15' and series('1.10.2') == '0.11'
    assert series('2.1.2+cu121') is None and series('1.7.1') is None and series('3.0.0') is None


# ---------------------------------------------------------------------------------------------- processes
def _fake_python(tmp_path: Path, body: str) -> str:
    path = tmp_path / 'python'
    path.write_text('#!/usr/bin/env bash\n' + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_inspect_env_reads_the_checks_and_survives_a_crash(tmp_path):
    """The child's JSON lines become the state; a check after a crash counts as failed."""
    meta = json.dumps(dict(check='meta', ok=True, modules=dict(pytest=True),
                           versions=dict(torch=None, torchvision=None, mmcv='2.1.0', mmengine='0.10.7',
                                         mmdet='3.3.0', mmpretrain='1.2.0'),
                           pddr_mm=str(REPO / 'pddr_mm' / '__init__.py')))
    lines = ['noise printed by an import', meta, json.dumps(dict(check='torch', ok=True, version='2.6.0+cpu')),
             json.dumps(dict(check='torchvision', ok=False, error="ModuleNotFoundError: No module named 'x'"))]
    (tmp_path / 'out').write_text('\n'.join(lines) + '\n')
    python = _fake_python(tmp_path, f'cat {tmp_path / "out"}\nkill -SEGV $$\n')  # dies in the mmcv check
    s, errors = check_env.inspect_env(python, repo=str(REPO))
    assert s.versions['torch'] == '2.6.0+cpu'  # no metadata: the module's own version
    assert s.versions['torchvision'] is None and s.versions['mmdet'] == '3.3.0'
    assert s.works == dict(torch=True, torchvision=False, mmcv=False, openmmlab=False)
    assert 'No module named' in errors['torchvision'] and 'stopped' in errors['mmcv']
    assert s.pddr_mm and s.modules == {'pytest': True}
    s, _ = check_env.inspect_env(python, repo=str(tmp_path))  # pddr_mm imported from another checkout
    assert not s.pddr_mm


def test_inspect_env_prefers_the_distribution_version(tmp_path):
    """pip matches the distribution's version: the index's torch 2.13.0 reports '2.13.0+cu130' itself."""
    lines = [json.dumps(dict(check='meta', ok=True, modules={}, pddr_mm=None,
                             versions=dict(torch='2.13.0', torchvision='0.28.0'))),
             json.dumps(dict(check='torch', ok=True, version='2.13.0+cu130')),
             json.dumps(dict(check='torchvision', ok=True, version='0.28.0+cu130'))]
    (tmp_path / 'out').write_text('\n'.join(lines) + '\n')
    s, errors = check_env.inspect_env(_fake_python(tmp_path, f'cat {tmp_path / "out"}\n'), repo=str(REPO))
    assert s.versions['torch'] == '2.13.0' and s.versions['torchvision'] == '0.28.0'
    assert s.works['torch'] and s.works['torchvision'] and not s.works['mmcv'] and not s.pddr_mm


def test_inspect_env_of_this_python():
    """The real probe runs in this interpreter's environment (whatever it holds) without raising."""
    s, errors = check_env.inspect_env(sys.executable, repo=str(REPO))
    assert set(s.works) == {'torch', 'torchvision', 'mmcv', 'openmmlab'} and set(s.modules) == set(EXTRAS)
    assert s.modules['pytest'] and all(not ok for c, ok in s.works.items() if c in errors)


def test_setup_env_runs_each_step_as_documented(tmp_path):
    """setup_env.sh with a fake Python: the pinned pair bypasses the pip configuration, every other
    install uses it, torchvision's step pins the installed torch, and the result is checked again."""
    plan_file, log = tmp_path / 'plan', tmp_path / 'log'
    plan_file.write_text('registry-torch torch==2.13.0 torchvision==0.28.0\n'
                         'torchvision torchvision==0.21.* torch==2.6.0\n'
                         'mmcv-rebuild mmcv==2.1.0\npip mmdet==3.3.0 onnx\neditable\n')
    python = _fake_python(tmp_path, f"""
if [ "$1" = tools/misc/check_env.py ]; then
  if [ "${{2:-}}" = --verify ]; then echo verify >> {log}; else cat {plan_file}; fi
  exit 0
fi
echo "cfg=${{PIP_CONFIG_FILE:-user}} $*" >> {log}
""")
    env = dict(os.environ, PYTHON=python)
    out = subprocess.run(['bash', 'tools/setup_env.sh'], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = log.read_text().splitlines()
    pip = '-m pip install --disable-pip-version-check -q'
    assert lines[0].startswith('cfg=/dev/null -m pip --isolated install') and lines[0].endswith(
        '--force-reinstall --no-deps torch==2.13.0 torchvision==0.28.0')
    assert lines[1].startswith('cfg=/dev/null -m pip --isolated install') and 'force' not in lines[1]
    assert lines[1].endswith(' torch==2.13.0 torchvision==0.28.0')
    assert lines[2] == f'cfg=user {pip} torchvision==0.21.* torch==2.6.0'
    assert lines[3] == f'cfg=user {pip} setuptools>=77.0.3,<81 wheel ninja'
    assert lines[4] == f'cfg=user {pip} --no-build-isolation --force-reinstall --no-deps --no-cache-dir mmcv==2.1.0'
    assert lines[5] == f'cfg=user {pip} mmcv==2.1.0'
    assert lines[6] == f'cfg=user {pip} mmdet==3.3.0 onnx'
    assert lines[7] == f'cfg=user {pip} --no-deps --no-build-isolation -e .'
    assert lines[8:] == ['verify']

    plan_file.write_text('')  # nothing to do: no install, no second check
    log.unlink()
    out = subprocess.run(['bash', 'tools/setup_env.sh'], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and not log.exists() and 'done' in out.stdout


def test_setup_env_stops_when_check_env_cannot_decide(tmp_path):
    python = _fake_python(tmp_path, 'echo "[setup_env] ERROR: no torchvision" >&2; exit 2\n')
    out = subprocess.run(['bash', 'tools/setup_env.sh'], cwd=REPO, env=dict(os.environ, PYTHON=python),
                         capture_output=True, text=True)
    assert out.returncode == 2 and 'ERROR' in out.stderr and 'done' not in out.stdout


def test_main_prints_steps_and_exit_codes(monkeypatch, capsys):
    fake = state(torchvision=None)
    monkeypatch.setattr(check_env, 'inspect_env', lambda python: (fake, {}))
    assert check_env.main([]) == 0
    assert capsys.readouterr().out == f'torchvision torchvision==0.28.* torch=={P["torch"]}\n'
    assert check_env.main(['--verify']) == 1
    fake = state(torch='2.1.2+cu121', torchvision=None)
    assert check_env.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == '' and 'ERROR' in captured.err
