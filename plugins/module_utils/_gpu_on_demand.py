# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""On-demand GPU modes: the catalog's policy (``inference_gpu_on_demand``), its validation, and the
decisions taken from it when a request asks for a model the GPU's current mode does not serve.

Private to the collection. Pure functions of the policy, the modes and the cluster's state, so the
rules are unit-tested without a cluster; the catalog preflight and the in-cluster switcher both use
them. The rules (docs/gpu_mode.md, "On-demand modes"):

- only a mode listed in ``modes`` is entered on demand, and only to serve a request's model;
- a mode in ``never_leave`` is never left on demand (someone is using the GPU);
- a mode other than the default that an operator entered (``gpu_mode``, the host command) is kept
  until an operator leaves it; the default mode is everyone's, whoever entered it;
- a mode stays at least ``min_dwell_seconds`` before a request or the idle return may leave it;
- a mode entered on demand returns to the default after ``idle_seconds`` without a request for it.
"""

from __future__ import annotations

import collections

# Who entered the mode the GPU is in, as each switch records it on the vLLM Deployment: an operator
# (gpu_mode, gpu_mode.yml, the host's gpu-mode <mode>), a request or the idle return, the host command
# at boot, or nobody yet (site.yml's install).
from ansible_collections.homelab.inference.plugins.module_utils._gpu_mode import ON_DEMAND, OPERATOR

REPLIES = ("hold", "retry")
MAX_HOLD_SECONDS = 3600

# Every key of the policy, described once: the preflight checks against it, the catalog role's
# defaults and argument spec say the same (a test holds them together).
PolicyKey = collections.namedtuple("PolicyKey", "key types default text")
POLICY_KEY_TABLE = (
    PolicyKey("enabled", bool, False, "Whether a request may switch the GPU at all; off by default."),
    PolicyKey("modes", list, ["ml", "r1"], "The modes a request may switch the GPU to, each serving a vLLM model."),
    PolicyKey("never_leave", list, ["gaming"], "Modes no request and no idle return leaves, whoever entered them."),
    PolicyKey("hold_seconds", int, 180, "The longest a request is held while its mode loads (0 to 3600); "
              "0 answers 503 with Retry-After at once."),
    PolicyKey("min_dwell_seconds", int, 300, "The least time a mode stays before a request or the idle return "
              "may leave it."),
    PolicyKey("idle_seconds", int, 900, "Seconds without a request for a mode entered on demand before the GPU "
              "returns to the default mode; 0 never returns by itself."),
    PolicyKey("reply", str, "hold", "What a request gets while its mode loads when its client does not say: "
              "hold (wait for the answer) or retry (503 with Retry-After at once)."),
)
DEFAULTS = {entry.key: entry.default for entry in POLICY_KEY_TABLE}
WHERE = "inference_gpu_on_demand"
_DOC_TYPES = {bool: "boolean", list: "list", int: "integer", str: "string"}


def policy_key_docs():
    """The policy's keys as documentation lines (Ansible doc markup), in the table's order."""
    return ["C(%s) (%s, default %s): %s" % (entry.key, _DOC_TYPES[entry.types], _doc_value(entry.default), entry.text)
            for entry in POLICY_KEY_TABLE]


def _doc_value(value):
    if isinstance(value, bool):
        return "V(%s)" % str(value).lower()
    if isinstance(value, list):
        return "V([%s])" % ", ".join(value)
    return "V(%s)" % value


def effective(policy):
    """The policy with every key it leaves out at its default (Ansible replaces a whole mapping)."""
    merged = dict(DEFAULTS)
    merged.update(policy or {})
    return merged


def policy_errors(policy, modes, default_mode):
    """Every problem in the policy, one line each naming the key and the fix (empty when valid).
    ``modes`` is inference_gpu_modes, already validated by the catalog preflight."""
    if policy is None:
        return []
    if not isinstance(policy, dict):
        return ["%s: must be a mapping with %s; leave it out to keep on-demand switching off"
                % (WHERE, ", ".join(DEFAULTS))]
    errors = []
    types = {entry.key: entry.types for entry in POLICY_KEY_TABLE}
    for key in policy:
        if key not in types:
            errors.append("%s.%s: unknown key; use one of %s" % (WHERE, key, ", ".join(DEFAULTS)))
    merged = effective(policy)
    for key, kind in types.items():
        value = merged[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            errors.append("%s.%s: must be %s, got %r" % (WHERE, key, _KIND_NAMES[kind], value))
    if errors:
        return errors
    known = modes if isinstance(modes, dict) else {}
    errors.extend(_mode_list_errors("modes", merged["modes"], known))
    errors.extend(_mode_list_errors("never_leave", merged["never_leave"], known))
    for index, mode in enumerate(merged["modes"]):
        spec = known.get(mode)
        if isinstance(spec, dict) and not spec.get("vllm_model"):
            errors.append("%s.modes[%d]: '%s' frees the GPU and serves no model, so no request can ask for it; "
                          "remove it" % (WHERE, index, mode))
        if mode in merged["never_leave"]:
            errors.append("%s.modes[%d]: '%s' is also in never_leave, so a request could enter it and nothing "
                          "would leave it; remove it from one of the two" % (WHERE, index, mode))
    if merged["enabled"] and not merged["modes"]:
        errors.append("%s.modes: empty while enabled is true; list the modes a request may enter, or set "
                      "enabled: false" % WHERE)
    if not 0 <= merged["hold_seconds"] <= MAX_HOLD_SECONDS:
        errors.append("%s.hold_seconds: must be from 0 to %d, got %d"
                      % (WHERE, MAX_HOLD_SECONDS, merged["hold_seconds"]))
    for key in ("min_dwell_seconds", "idle_seconds"):
        if merged[key] < 0:
            errors.append("%s.%s: must be 0 or more, got %d" % (WHERE, key, merged[key]))
    if merged["reply"] not in REPLIES:
        errors.append("%s.reply: must be %s, got %r" % (WHERE, " or ".join(REPLIES), merged["reply"]))
    if merged["enabled"] and default_mode in merged["never_leave"] and known:
        errors.append("%s.never_leave: holds the default mode '%s', so no request could ever switch the GPU; "
                      "remove it, or set enabled: false" % (WHERE, default_mode))
    return errors


_KIND_NAMES = {bool: "true or false", list: "a list of mode names", int: "an integer", str: "a string"}


def _mode_list_errors(key, names, modes):
    errors = []
    for index, name in enumerate(names):
        where = "%s.%s[%d]" % (WHERE, key, index)
        if not isinstance(name, str) or name not in modes:
            errors.append("%s: %r is not a mode in inference_gpu_modes; use one of %s"
                          % (where, name, ", ".join(sorted(str(m) for m in modes))))
        elif name in names[:index]:
            errors.append("%s: '%s' appears twice; list each mode once" % (where, name))
    return errors


# -- decisions --------------------------------------------------------------------

# The GPU as the switcher sees it: the mode, who entered it (_gpu_mode.SOURCES) and who exactly (a holder
# identity), when (epoch seconds), and the mode a switch under way is going to (or None).
GpuState = collections.namedtuple("GpuState", "mode source by since switching_to")

# What a request for a model gets: "serve" (the mode serves it now), "switch" (start the switch to
# ``target``, or join the one under way), or "refuse" with ``reason`` and, when a later request could
# succeed, ``retry_after`` seconds (None: only an operator can change it).
Decision = collections.namedtuple("Decision", "action target reason retry_after")


def serving_modes(model, modes):
    """The modes whose vLLM serves ``model``, in catalog order."""
    return [name for name, spec in modes.items() if isinstance(spec, dict) and spec.get("vllm_model") == model]


def decide(policy, modes, default_mode, state, model, now):
    """What a request for ``model`` gets (see the module's rules)."""
    policy = effective(policy)
    serving = serving_modes(model, modes)
    if state.mode in serving and state.switching_to is None:
        return Decision("serve", state.mode, "", None)
    if not serving:
        return Decision("refuse", None, "no GPU mode serves %s" % model, None)
    if not policy["enabled"]:
        return Decision("refuse", serving[0], "on-demand switching is off (inference_gpu_on_demand.enabled)", None)
    allowed = [mode for mode in serving if mode in policy["modes"]]
    if not allowed:
        return Decision("refuse", serving[0], "on-demand switching may not enter mode '%s' "
                        "(inference_gpu_on_demand.modes)" % serving[0], None)
    target = allowed[0]
    if state.switching_to is not None:
        if state.switching_to == target:
            return Decision("switch", target, "", None)
        return Decision("refuse", target, "the GPU is switching to mode '%s'" % state.switching_to,
                        max(1, policy["hold_seconds"]))
    refusal = _leave_refusal(policy, default_mode, state, now)
    if refusal:
        return Decision("refuse", target, *refusal)
    return Decision("switch", target, "", None)


def _leave_refusal(policy, default_mode, state, now):
    """(reason, retry_after) when no on-demand switch may leave the current mode now, else None."""
    if state.mode in policy["never_leave"]:
        return ("GPU in %s mode; on-demand switching is off for %s" % (state.mode, state.mode), None)
    if state.source == OPERATOR and state.mode != default_mode:
        return ("GPU in %s mode, set by %s; an operator's mode is kept until an operator switches"
                % (state.mode, state.by or "an operator"), None)
    stayed = now - state.since if state.since is not None else None
    if stayed is not None and stayed < policy["min_dwell_seconds"]:
        left = policy["min_dwell_seconds"] - stayed
        return ("GPU in %s mode for %ds; it stays at least %ds (inference_gpu_on_demand.min_dwell_seconds)"
                % (state.mode, stayed, policy["min_dwell_seconds"]), max(1, int(left + 0.999)))
    return None


def idle_return(policy, default_mode, state, last_request, now):
    """Seconds until the GPU returns to the default mode by itself: 0 when due now, None when it
    never will from this state (not entered on demand, the default already, a switch under way,
    idle return off). ``last_request`` is the epoch time of the last request for the mode's models."""
    policy = effective(policy)
    if (not policy["enabled"] or not policy["idle_seconds"] or state.mode == default_mode
            or state.source != ON_DEMAND or state.switching_to is not None or state.mode in policy["never_leave"]):
        return None
    since = state.since if state.since is not None else now
    quiet_from = max(since, last_request if last_request is not None else since)
    due = max(quiet_from + policy["idle_seconds"], since + policy["min_dwell_seconds"])
    return max(0.0, due - now)
