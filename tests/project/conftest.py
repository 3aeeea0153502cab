"""Project-level tests import the lab (fakes, rigs) from the checkout's root."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The gateway tests start a fresh REAL LiteLLM proxy per test; fork them from one
# interpreter that has imported LiteLLM already (lab/litellm_zygote.py): ~1 s per
# start instead of ~7 CPU seconds. The lab's LiteLLM pods still start the plain way.
os.environ.setdefault("LAB_LITELLM_FORK", "1")
