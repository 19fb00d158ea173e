from setuptools import find_packages, setup


def readme() -> str:
    with open('README.md', encoding='utf-8') as f:
        return f.read()


def version() -> str:
    scope: dict = {}
    with open('pddr_mm/version.py', encoding='utf-8') as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='pddr_mm',
    version=version(),
    description='PDDR (Parameter Disentanglement for Diverse Representations) for MMDetection 3.x '
    'and MMPretrain 1.x',
    long_description=readme(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('configs', 'tools', 'tests')),
    python_requires='>=3.8',
    install_requires=[
        'torch>=1.8',
        'mmengine>=0.10.0,<1.0.0',
        'mmcv>=2.0.0,<2.2.0',
        'mmdet>=3.3.0,<3.4.0',
        'mmpretrain>=1.2.0,<1.3.0',
        'pycocotools',
    ],
    extras_require=dict(tests=['pytest'], plot=['matplotlib'], deploy=['onnx', 'onnxruntime']),
    license='Apache License 2.0',
    zip_safe=False,
)
