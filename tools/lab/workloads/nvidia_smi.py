"""FAKE `nvidia-smi`, as the NVIDIA container runtime puts it into a container
that holds a GPU of the lab's GPU node.

Only the query forms tools use are served: ``--query-gpu=<fields>`` and
``--query-compute-apps=<fields>`` with ``--format=csv[,noheader][,nounits]``,
with the fields and units of ``nvidia-smi --help-query-gpu`` and
``--help-query-compute-apps`` (driver 570/580). Memory used is the card's
(every process on it); the processes listed are those the lab hands in, which
are the host's only for a pod with hostPID, as the driver shows a container
only its own PID namespace's processes. Anything else is refused
as the real tool refuses an argument combination it does not know.

The GPU it reports comes from the lab (``python -m lab fault gpu-driver``
changes the driver version). A container that was given no GPU sees none:
``No devices were found`` and exit code 6, as in nvidia-smi(1), RETURN VALUE
("6 - A query to find an object was unsuccessful")."""

import json
import os
import sys

FIELDS = {
    # name: (header, unit or None, value from the lab's GPU)
    "driver_version": ("driver_version", None, lambda gpu: gpu["driver_version"]),
    "name": ("name", None, lambda gpu: gpu["name"]),
    "gpu_name": ("name", None, lambda gpu: gpu["name"]),
    "count": ("count", None, lambda gpu: "1"),
    "uuid": ("uuid", None, lambda gpu: gpu["uuid"]),
    "memory.total": ("memory.total [MiB]", "MiB", lambda gpu: gpu["memory_total"]),
    "memory.used": ("memory.used [MiB]", "MiB", lambda gpu: gpu["memory_used"]),
    "memory.free": ("memory.free [MiB]", "MiB",
                    lambda gpu: str(int(gpu["memory_total"]) - int(gpu["memory_used"]))),
}
APP_FIELDS = {
    "pid": ("pid", None, lambda app: str(app["pid"])),
    "process_name": ("process_name", None, lambda app: app["name"]),
    "name": ("process_name", None, lambda app: app["name"]),
    "used_gpu_memory": ("used_gpu_memory [MiB]", "MiB", lambda app: str(app["used_mib"])),
    "used_memory": ("used_gpu_memory [MiB]", "MiB", lambda app: str(app["used_mib"])),
    "gpu_uuid": ("gpu_uuid", None, lambda app: os.environ["LAB_GPU_UUID"]),
}
INVALID = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."


def parse(argv):
    query = format_ = None
    apps = False
    for arg in argv:
        if arg.startswith("--query-gpu=") and query is None:
            query = arg.split("=", 1)[1]
        elif arg.startswith("--query-compute-apps=") and query is None:
            query, apps = arg.split("=", 1)[1], True
        elif arg.startswith("--format="):
            format_ = arg.split("=", 1)[1]
        else:
            return None
    if not query or not format_:
        return None
    options = format_.split(",")
    if options[0] != "csv" or any(o not in ("noheader", "nounits") for o in options[1:]):
        return None
    fields = [f.strip() for f in query.split(",")]
    return fields, "noheader" not in options, "nounits" not in options, apps


def row(known, fields, source, units):
    values = []
    for field in fields:
        dummy, unit, value = known[field]
        text = value(source)
        values.append("%s %s" % (text, unit) if unit and units else text)
    return values


def main(argv):
    parsed = parse(argv)
    if parsed is None:
        print(INVALID)
        return 2
    fields, header, units, apps = parsed
    known = APP_FIELDS if apps else FIELDS
    unknown = [f for f in fields if f not in known]
    if unknown:
        print('Field "%s" is not a valid field to query.' % unknown[0])
        return 2
    if os.environ.get("NVIDIA_VISIBLE_DEVICES", "void") in ("", "void", "none"):
        print("No devices were found")
        return 6
    gpu = {"driver_version": os.environ["LAB_GPU_DRIVER_VERSION"], "name": os.environ["LAB_GPU_NAME"],
           "uuid": os.environ["LAB_GPU_UUID"], "memory_total": os.environ["LAB_GPU_MEMORY_TOTAL_MIB"],
           "memory_used": os.environ["LAB_GPU_MEMORY_USED_MIB"]}
    if header:
        print(", ".join(known[f][0] for f in fields))  # the header names the unit even with nounits
    if apps:
        for app in json.loads(os.environ.get("LAB_GPU_PROCESSES") or "[]"):
            print(", ".join(row(APP_FIELDS, fields, app, units)))
        return 0
    print(", ".join(row(FIELDS, fields, gpu, units)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
