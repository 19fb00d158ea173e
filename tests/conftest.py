import os
import sys

# test modules import shared helpers from tests/ (random_bn), their own directory (test_fusion_exact.make_layer)
# and test_deploy (deploy_fixtures.load_tool)
for sub in ('', 'test_ops', 'test_deploy'):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), sub))


