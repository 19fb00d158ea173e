import os
import sys

# the model tests share _helpers.py from this directory
sys.path.insert(0, os.path.dirname(__file__))
