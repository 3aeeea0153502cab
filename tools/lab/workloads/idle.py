"""FAKE for images whose work is outside the lab (the NVIDIA device plugin):
a process that stays up until it is stopped.

With ``LAB_FAIL`` set (``python -m lab fault device-plugin --fail``) it stands
for a plugin that cannot use the driver - the NVML library missing on the
host, as on a worker without the driver's libnvidia-ml1: it logs why and exits
1, so its pod crash-loops and the node stops advertising ``nvidia.com/gpu``."""

import os
import signal
import sys
import time

if __name__ == "__main__":
    if os.environ.get("LAB_FAIL"):
        print("E lab fake device plugin: failed to initialize NVML: %s" % os.environ["LAB_FAIL"], flush=True)
        sys.exit(1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)
