import os
import sys

# test modules import shared helpers from tests/ (random_bn) and their own directory (test_fusion_exact.make_layer)
for sub in ('', 'test_ops'):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), sub))


