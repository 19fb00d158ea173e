import os
import sys

# test modules import shared helpers from their own directory (e.g. test_fusion_exact.make_layer)
for sub in ('test_ops', ):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), sub))


import pytest  # noqa: E402


@pytest.fixture(params=['cpp', 'torch'])
def combine_form(request, monkeypatch):
    """Run a test with each form of combine_parts: the C++ op (CPU) and the torch ops (CUDA, fallback)."""
    from pddr_mm.ops import fusion
    if request.param == 'torch':
        monkeypatch.setattr(fusion, 'cpu_ext', lambda: None)
    elif fusion.cpu_ext() is None:
        if os.environ.get('PDDR_CPU_EXT') == '0':
            pytest.skip('the C++ combine op is switched off (PDDR_CPU_EXT=0)')
        pytest.fail('the C++ combine op could not be built (see the warning); CPU training runs slower without it')
    return request.param


@pytest.fixture
def ext_calls(monkeypatch):
    """``ext_calls(*names)``: from then on, every call of one of the C++ op module's functions ``names`` adds
    its name to the returned list (the module is wrapped, so every other function works as before)."""
    from pddr_mm.ops import fusion

    def spy(*names):
        ext = fusion.cpu_ext()
        if ext is None:
            pytest.skip('the C++ combine op is not built')
        calls = []

        class Spy:
            def __getattr__(self, attr):
                return getattr(ext, attr)

        def counted(name):
            def call(*args):
                calls.append(name)
                return getattr(ext, name)(*args)
            return staticmethod(call)

        for name in names:
            setattr(Spy, name, counted(name))
        monkeypatch.setattr(fusion, 'cpu_ext', lambda: Spy())
        return calls
    return spy
