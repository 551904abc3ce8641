"""The checks svc's own test suite would make; run against oslo.privsep and privsepd.

Not collected by the main run (the file name does not start with test_):
test_service_two_ways.py runs it twice in a fresh network namespace, once
per implementation, and reports each check. Nothing here knows which
implementation it runs on except the first check, which proves the swap.
"""

from __future__ import annotations

import errno
import logging
import os

import pytest
import svc.conf
from oslo_config import cfg
from oslo_privsep import priv_context
from svc import agent, exceptions, privileged
from svc.privileged import ops
from svcdeps import netlink

CAP_DAC_READ_SEARCH, CAP_NET_ADMIN = 1 << 2, 1 << 12


@pytest.fixture(scope="session", autouse=True)
def service(tmp_path_factory):
    """What svc's main() does: config, logging, privsep init, then start (FORK)."""
    conf_file = tmp_path_factory.mktemp("etc") / "svc.conf"
    conf_file.write_text(
        "[svc]\ndefault_mtu = 1450\n\n[svc_privileged]\ncapabilities = CAP_NET_ADMIN\n"
    )
    svc.conf.register()
    cfg.CONF(["--config-file", str(conf_file)], project="svc")
    logging.getLogger().setLevel(logging.DEBUG)
    priv_context.init(root_helper=["sudo"])
    privileged.default.start(priv_context.Method.FORK)
    privileged.reader.start(priv_context.Method.FORK)
    yield
    privileged.default.stop()
    privileged.reader.stop()
    cfg.CONF.reset()


def test_the_implementation_is_the_one_asked_for():
    expected = {
        "oslo": "oslo_privsep.priv_context",
        "privsepd": "privsepd.compat.oslo_privsep.priv_context",
    }[os.environ["SVC_PRIVSEP"]]
    assert priv_context.__name__ == expected


def test_entrypoints_run_in_a_helper_process():
    assert ops.whoami()["pid"] != os.getpid()


def test_each_context_has_its_own_helper():
    assert ops.whoami()["pid"] != ops.reader_whoami()["pid"]


def test_capabilities_from_config_replace_the_code_declaration():
    assert cfg.CONF.svc_privileged.capabilities == [12]
    assert ops.whoami()["CapEff"] == CAP_NET_ADMIN


def test_a_context_in_the_default_section_keeps_its_code_capabilities():
    assert ops.reader_whoami()["CapEff"] == CAP_DAC_READ_SEARCH


def test_the_checks_run_in_a_fresh_network_namespace():
    assert os.readlink("/proc/self/ns/net") != os.environ["SVC_PARENT_NETNS"]


def test_veth_pair_is_created_configured_and_deleted_over_netlink():
    mtu = cfg.CONF.svc.default_mtu
    ops.create_veth("svc0", "svc0p")
    try:
        ops.set_link("svc0", mtu=mtu, up=True)
        link = ops.get_link("svc0")
        assert (link["mtu"], link["up"]) == (1450, True)
        assert ops.get_link("svc0p")["mtu"] == 1500
    finally:
        ops.delete_link("svc0")
    with pytest.raises(netlink.NetlinkError) as caught:
        ops.get_link("svc0p")  # the peer went with it
    assert caught.value.code == errno.ENODEV


def test_netlink_error_is_caught_by_type_and_code():
    assert agent.ensure_mtu("nosuch0", 1400) == "missing"
    with pytest.raises(netlink.NetlinkError) as caught:
        ops.set_link("nosuch0", mtu=1400)
    assert type(caught.value) is netlink.NetlinkError
    assert caught.value.code == errno.ENODEV


def test_oserror_keeps_its_class_and_errno():
    with pytest.raises(FileNotFoundError) as caught:
        ops.read_file("/nonexistent/svc.conf")
    assert caught.value.errno == errno.ENOENT
    assert agent.file_exists("/nonexistent/svc.conf") is False
    assert agent.file_exists("/etc/hostname") is True


def test_process_error_is_caught_by_type_with_its_fields():
    result = agent.run("/bin/sh", "-c", "echo oops >&2; exit 3")
    assert result == ("failed", 3, "oops\n", "/bin/sh -c echo oops >&2; exit 3")


def test_successful_command_output_crosses():
    assert agent.run("/bin/echo", "hi") == ("ok", "hi\n", "")


def test_service_exception_is_caught_by_type_with_its_attribute():
    assert agent.link_index("nosuch1") is None
    with pytest.raises(exceptions.InterfaceNotFound) as caught:
        ops.require_link("nosuch1")
    assert caught.value.device == "nosuch1"
    assert str(caught.value) == "interface nosuch1 not found"


def test_loopback_exists_in_the_namespace():
    assert agent.link_index("lo") == 1


def test_entrypoint_with_timeout_raises_privsep_timeout():
    assert agent.probe(2.0) == "timeout"


def test_helper_still_serves_after_a_timeout():
    assert ops.quick_with_timeout() == "done"
    assert agent.probe(0.0) == "done"


def test_log_record_reaches_the_service_logger_of_the_same_name(caplog):
    caplog.set_level(logging.DEBUG)
    ops.create_veth("svc1", "svc1p")
    ops.delete_link("svc1")
    records = [r for r in caplog.records if "creating veth pair svc1/svc1p" in r.getMessage()]
    assert [r.name for r in records] == ["svc.privileged.ops"]
    assert records[0].levelno == logging.DEBUG


def test_values_cross_as_msgpack_values():
    back = ops.echo({"raw": b"\x00\xff", "text": "é", "n": [1, 2], "none": None})
    assert back["raw"] == b"\x00\xff" and back["text"] == "é" and back["none"] is None
    assert list(back["n"]) == [1, 2]


def test_is_entrypoint_names_the_owning_context():
    assert privileged.default.is_entrypoint(ops.whoami)
    assert not privileged.reader.is_entrypoint(ops.whoami)


def test_set_client_mode_false_runs_entrypoints_in_process():
    privileged.default.set_client_mode(False)
    try:
        assert ops.whoami()["pid"] == os.getpid()
    finally:
        privileged.default.set_client_mode(True)
    assert ops.whoami()["pid"] != os.getpid()
