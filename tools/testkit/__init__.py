"""What the tests, the molecule scenarios and the benchmarks import to drive the project: the
playbook runner, the gateway rig (the REAL LiteLLM proxy before FAKE upstreams), a raw client
for the lab's API, and the FAKE of gpu_mode's Kubernetes client. Development tooling, not part
of the collection."""
