import os
import sys

# hf_reference.py and tables.py are test helpers living beside the tests.
sys.path.insert(0, os.path.dirname(__file__))
