"""Pure parts of the three modes: which layers require_isolation asks for, what makes a mode reduced,
and which setting a failed user namespace is blamed on."""

from __future__ import annotations

import errno

import pytest

from lorafleet.shared.sandbox._isolation import explain_userns_failure
from lorafleet.shared.sandbox.models import ALL_LAYERS, missing_layers, reduced

ROOT_MODE = [x for x in ALL_LAYERS if x != "user_namespace"]
ROOTLESS = [x for x in ALL_LAYERS if x != "uid_drop"]
NO_SYSCTL = {"kernel.unprivileged_userns_clone": None, "user.max_user_namespaces": "96365",
             "kernel.apparmor_restrict_unprivileged_userns": None}


def test_root_and_rootless_both_meet_require_isolation():
    assert missing_layers(ROOT_MODE) == [] and missing_layers(ROOTLESS) == []
    assert reduced(ROOT_MODE) == [] and reduced(ROOTLESS) == []


def test_neither_uid_drop_nor_user_namespace_is_missing_one_of_the_pair():
    layers = [x for x in ALL_LAYERS if x not in ("uid_drop", "user_namespace")]
    assert missing_layers(layers) == ["uid_drop|user_namespace"]
    assert reduced(layers) == ["uid_drop|user_namespace"]


def test_the_reduced_mode_lacks_the_namespaces():
    host = ["process_group", "no_new_privs", "seccomp", "clean_env", "private_workdir", "rlimits", "wall_clock",
            "output_cap", "memory_address_space"]
    assert reduced(host) == ["pid_namespace", "net_namespace", "mount_namespace", "private_root", "private_tmp",
                             "uid_drop|user_namespace"]
    assert missing_layers(ROOT_MODE[:-1]) == [ROOT_MODE[-1]]  # every other layer still counts


@pytest.mark.parametrize(("sysctls", "err", "seccomp", "names"), [
    ({"kernel.unprivileged_userns_clone": "0"}, errno.EPERM, "0", "kernel.unprivileged_userns_clone is 0"),
    ({"user.max_user_namespaces": "0"}, errno.ENOSPC, "0", "user.max_user_namespaces is 0"),
    ({}, errno.ENOSPC, "0", "user.max_user_namespaces (96365) or the nesting depth"),
    ({"kernel.apparmor_restrict_unprivileged_userns": "1"}, errno.EPERM, "0",
     "kernel.apparmor_restrict_unprivileged_userns is 1"),
    ({}, errno.EPERM, "2", "a seccomp filter on this process denies it"),
    ({}, errno.EINVAL, "0", "no user namespaces (CONFIG_USER_NS)"),
    ({}, errno.EPERM, "0", "user namespaces are denied here"),
], ids=["debian-sysctl", "max-zero", "max-reached", "apparmor", "container-seccomp", "no-userns", "other"])
def test_each_blocker_is_named(sysctls, err, seccomp, names):
    message = explain_userns_failure(err, {**NO_SYSCTL, **sysctls}, seccomp)
    assert names in message and message.startswith("unshare(CLONE_NEWUSER) failed")
