"""FAKE for images whose work is outside the lab (the NVIDIA device plugin):
a process that stays up until it is stopped."""

import signal
import time

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: exit(0))
    while True:
        time.sleep(3600)
