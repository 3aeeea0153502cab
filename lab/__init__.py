"""The local lab: a stand-in for a k3s cluster with one GPU worker (see docs/lab.md)."""
