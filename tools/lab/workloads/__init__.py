"""Programs the lab runs for container images that cannot run here.

Each is a FAKE (named so) that behaves like the real image on the wire; the
REAL LiteLLM proxy runs for the LiteLLM image."""
