# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``gpu-mode``: the GPU host's own command (installed by the role
homelab.inference.gpu_mode_host), for the person at that machine, with no
Ansible, checkout or vault: the gpu_mode module's switch (_gpu_mode_run), its
lock, verification and one-line summary, sent with the standard library
(_kube_rest) as a least-privilege ServiceAccount.

Its configuration (JSON, written by the role) names the API server, the files
holding the token, the cluster's CA and, optionally, a LiteLLM key (each mode
0600), and the switch's parameters as the module takes them."""

from __future__ import annotations

import argparse
import json
import sys

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode, _gpu_mode_boot, _gpu_mode_run
from ansible_collections.homelab.inference.plugins.module_utils._api_errors import KubeError
from ansible_collections.homelab.inference.plugins.module_utils._gpu_mode_rights import ROLE as RIGHTS_ROLE
from ansible_collections.homelab.inference.plugins.module_utils._gpu_switch import SwitchFailed
from ansible_collections.homelab.inference.plugins.module_utils._kube_rest import KubeRest, switch_endpoints

CONFIG = "/etc/homelab-inference/gpu-mode.json"


class ConfigError(Exception):
    pass


def read_secret(config, key, path_of):
    """The first line of the file the configuration names under ``key`` (None when it names none)."""
    path = config.get(key)
    if not path:
        return None
    try:
        with open(path) as handle:
            value = handle.readline().strip()
    except OSError as err:
        raise ConfigError("%s: %s names %s, which cannot be read (%s); run gpu-mode as root, or re-run the role "
                          "homelab.inference.gpu_mode_host" % (path_of, key, path, err.strerror or err))
    if not value:
        raise ConfigError("%s: %s names %s, which is empty; re-run the role homelab.inference.gpu_mode_host"
                          % (path_of, key, path))
    return value


def load(path):
    """(the API client, the switch's parameters without mode, the boot section) from the configuration file."""
    try:
        with open(path) as handle:
            config = json.load(handle)
    except OSError as err:
        raise ConfigError("%s cannot be read (%s); install it with the role homelab.inference.gpu_mode_host, or "
                          "give --config" % (path, err.strerror or err))
    except ValueError as err:
        raise ConfigError("%s is not JSON (%s); re-run the role homelab.inference.gpu_mode_host" % (path, err))
    if not isinstance(config, dict) or not config.get("api_server") or not isinstance(config.get("params"), dict):
        raise ConfigError("%s: needs api_server and params; re-run the role homelab.inference.gpu_mode_host" % path)
    params = dict(_gpu_mode_run.DEFAULTS, vllm_url=None, litellm_url=None, lock_duration=None)
    params.update(config["params"])
    params["litellm_api_key"] = read_secret(config, "litellm_api_key_file", path)
    try:
        api = KubeRest(config["api_server"], read_secret(config, "token_file", path), config.get("ca_file"))
    except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
        raise ConfigError("%s: ca_file names %s, which is not a readable CA certificate (%s); on a k3s agent it is "
                          "/var/lib/rancher/k3s/agent/server-ca.crt once the agent joined"
                          % (path, config.get("ca_file"), getattr(err, "strerror", None) or err))
    return api, params, config.get("boot") or {"policy": "keep"}


def say(stream, line):
    stream.write(line + "\n")


def parser():
    found = argparse.ArgumentParser(
        prog="gpu-mode", description="Switch this machine's GPU between the inference modes, verified, or show "
        "the mode; the same switch as `ansible-playbook gpu_mode.yml -e mode=...`.")
    found.add_argument("mode", help="a mode of the catalog (ml, r1, gaming, ...), status, or boot: as the boot "
                       "policy says, once the cluster has seen this boot, the default mode or none")
    found.add_argument("--check", action="store_true", help="say what would change; change nothing")
    found.add_argument("--json", action="store_true", help="print the whole result as JSON after the summary")
    found.add_argument("--config", default=CONFIG, help="the configuration file (default %(default)s)")
    return found


def boot_mode(api, boot, path, out, err):
    """The mode to enter at boot, once the cluster has seen this boot of the node; or the exit code when
    there is none to enter (policy keep, a bad configuration, no such boot seen in time)."""
    found = _gpu_mode_boot.boot_problems(boot)
    if found:
        say(err, "gpu-mode: %s: %s" % (path, "; ".join(found)))
        return 2
    if boot["policy"] == "keep":
        say(out, "GPU mode at boot: kept (boot policy keep)")
        return 0
    try:
        _gpu_mode_boot.wait_for_this_boot(api, boot["node"], _gpu_mode_boot.read_boot_id(boot["boot_id_file"]),
                                          boot.get("timeout", 900))
    except (_gpu_mode_boot.NotBooted, OSError) as problem:
        say(err, "gpu-mode: boot: %s" % problem)
        return 1
    return boot["mode"]


def main(argv=None, out=None, err=None):
    out, err = out or sys.stdout, err or sys.stderr
    args = parser().parse_args(argv)
    try:
        api, params, boot = load(args.config)
    except ConfigError as problem:
        say(err, "gpu-mode: %s" % problem)
        return 2
    params["mode"] = args.mode
    if args.mode == "boot":
        params["mode"] = boot_mode(api, boot, args.config, out, err)
        if isinstance(params["mode"], int):
            return params["mode"]
    found = _gpu_mode_run.problems(params)
    if found:
        say(err, "gpu-mode: %s" % "; ".join(found))
        return 2
    params = _gpu_mode_run.with_lock_duration(params)
    if params["litellm_service"] and not params["litellm_api_key"]:
        say(err, "gpu-mode: warning: no LiteLLM key configured (gpu_mode_host_litellm_api_key): the fallback tier "
                 "is not warmed and the gateway not checked")
        params["litellm_service"] = ""
    vllm, litellm, vllm_pod = switch_endpoints(api, params, RIGHTS_ROLE)

    def warn(message):
        say(err, "gpu-mode: warning: %s" % message)

    try:
        result = _gpu_mode_run.execute(api, params, vllm, litellm, vllm_pod, args.check, warn,
                                       source=_gpu_mode.BOOT if args.mode == "boot" else _gpu_mode.OPERATOR)
    except SwitchFailed as failure:
        say(err, "gpu-mode: %s" % failure)
        if args.json:
            say(out, json.dumps(dict(failure.result, failed=True, msg=str(failure)), sort_keys=True))
        return 1
    except KubeError as problem:
        say(err, "gpu-mode: %s" % problem)
        return 1
    if not args.check:
        result.pop("diff", None)
    say(out, _gpu_mode_run.summary(result, args.check))
    if args.json:
        say(out, json.dumps(result, sort_keys=True))
    return 0
