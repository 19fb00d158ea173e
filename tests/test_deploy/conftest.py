import os
import sys

# the tests import the tiny models and configs of this directory (deploy_fixtures)
sys.path.insert(0, os.path.dirname(__file__))
