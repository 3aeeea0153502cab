"""FAKE `nvidia-smi`, as the NVIDIA container runtime puts it into a container
that holds a GPU of the lab's GPU node.

Only the query form tools use is served: ``--query-gpu=<fields>
--format=csv[,noheader][,nounits]``, with the fields and units of
``nvidia-smi --help-query-gpu`` (driver 570/580). Anything else is refused
as the real tool refuses an argument combination it does not know.

The GPU it reports comes from the lab (``python -m lab fault gpu-driver``
changes the driver version). A container that was given no GPU sees none:
``No devices were found`` and exit code 6, as in nvidia-smi(1), RETURN VALUE
("6 - A query to find an object was unsuccessful")."""

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
INVALID = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."


def parse(argv):
    query = format_ = None
    for arg in argv:
        if arg.startswith("--query-gpu="):
            query = arg.split("=", 1)[1]
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
    return fields, "noheader" not in options, "nounits" not in options


def main(argv):
    parsed = parse(argv)
    if parsed is None:
        print(INVALID)
        return 2
    fields, header, units = parsed
    unknown = [f for f in fields if f not in FIELDS]
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
        print(", ".join(FIELDS[f][0] for f in fields))  # the header names the unit even with nounits
    values = []
    for field in fields:
        dummy, unit, value = FIELDS[field]
        text = value(gpu)
        values.append("%s %s" % (text, unit) if unit and units else text)
    print(", ".join(values))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
