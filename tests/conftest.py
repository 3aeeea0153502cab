"""Make ``ansible_collections.homelab.inference`` importable from a checkout."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# .collections/ansible_collections/homelab/inference is a symlink to the checkout;
# kubernetes.core comes from the ansible package (both are namespace packages).
COLLECTIONS = os.path.join(ROOT, ".collections")
if os.path.isdir(COLLECTIONS) and COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
