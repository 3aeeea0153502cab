"""FAKE servers for what cannot run here (GPU model servers, registries).

Each one behaves like the real thing on the wire: status codes, error bodies,
streaming formats and delays. They are fakes, and named so everywhere.
"""
