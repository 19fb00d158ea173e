import os
import sys

# the tests import the tiny RPG models of this directory (rpg_fixtures)
sys.path.insert(0, os.path.dirname(__file__))
