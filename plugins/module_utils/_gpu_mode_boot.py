# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The GPU mode at boot (``gpu-mode boot``, a systemd oneshot on the GPU worker): once the cluster
has seen this boot of the node, enter the boot mode (the catalog's default mode), or keep the mode the
cluster kept, as the boot policy says. Standard library only."""

from __future__ import annotations

import time

from ansible_collections.homelab.inference.plugins.module_utils._api_errors import KubeError

POLICIES = ("default", "keep")
RETRY = 5.0


class NotBooted(Exception):
    """The cluster did not show this boot of the node in time."""


def boot_problems(boot):
    """One-line errors in the configuration's ``boot`` section."""
    if boot.get("policy") not in POLICIES:
        return ["boot.policy: '%s' is not a boot policy; use default (enter the default mode) or keep"
                % boot.get("policy")]
    if boot["policy"] == "default" and not (boot.get("mode") and boot.get("node") and boot.get("boot_id_file")):
        return ["boot: the default policy needs mode, node and boot_id_file; re-run the role "
                "homelab.inference.gpu_mode_host"]
    return []


def read_boot_id(path):
    with open(path) as handle:
        return handle.read().strip()


def node_state(node, boot_id):
    """None when the node's kubelet has reported this boot and Ready, else what is missing."""
    if node is None:
        return "not registered"
    status = node.get("status") or {}
    reported = (status.get("nodeInfo") or {}).get("bootID")
    if reported != boot_id:
        # Before its kubelet posts again, a rebooted node still shows the last boot's status (Ready, even).
        return "its kubelet has not reported this boot yet (bootID %s, this boot %s)" % (reported, boot_id)
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    if not ready or ready[0].get("status") != "True":
        return "not Ready%s" % (": %s" % ready[0].get("message") if ready and ready[0].get("message") else "")
    return None


def wait_for_this_boot(kube, name, boot_id, timeout, clock=time.monotonic, sleep=time.sleep):
    """Until the API answers and node ``name`` shows boot ``boot_id`` and Ready; NotBooted after
    ``timeout`` seconds, at once for a refusal (401, 403) that asking again cannot change."""
    deadline = clock() + timeout
    while True:
        try:
            problem = node_state(kube.node(name), boot_id)
        except KubeError as err:
            if err.status in (401, 403):
                raise NotBooted(str(err))
            problem = str(err)
        if problem is None:
            return
        if clock() >= deadline:
            raise NotBooted("node %s did not show this boot within %ss: %s" % (name, timeout, problem))
        sleep(RETRY)
