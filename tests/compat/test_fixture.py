"""UnprivilegedPrivsepFixture: entrypoints run in-process, values as the channel carries them."""

from __future__ import annotations

import os

import pytest
from oslo_config import cfg
from svcdeps.netlink import NetlinkError

from privsepd.compat.oslo_privsep import capabilities as caps
from privsepd.compat.oslo_privsep import priv_context
from privsepd.compat.oslo_privsep.test.fixture import UnprivilegedPrivsepFixture
from privsepd.errors import ProtocolError

ctx = priv_context.PrivContext(
    "test_fixture", cfg_section="fixture_section", capabilities=[caps.CAP_NET_ADMIN]
)


@ctx.entrypoint
def echo(value):
    return [os.getpid(), value]


@ctx.entrypoint
def fail(code: int) -> None:
    raise NetlinkError(code)


@pytest.fixture
def fixture():
    with UnprivilegedPrivsepFixture(ctx, {"thread_pool_size": 3}) as fx:
        yield fx


def test_entrypoints_run_in_this_process_without_privilege(fixture):
    pid, _ = echo(1)
    assert pid == os.getpid()
    assert ctx.context.helper_pid is None


def test_arguments_and_results_cross_the_channel_encoding(fixture):
    assert echo((1, b"x"))[1] == [1, b"x"]  # a tuple arrives as a list, bytes stay bytes
    with pytest.raises(ProtocolError, match="cannot cross"):
        echo({1, 2})


def test_exceptions_come_back_re_created_with_attributes(fixture):
    with pytest.raises(NetlinkError) as caught:
        fail(17)
    assert caught.value.code == 17


def test_capabilities_user_and_group_are_cleared_and_overrides_applied(fixture):
    section = cfg.CONF.fixture_section
    assert (section.capabilities, section.user, section.group) == ([], None, None)
    assert section.thread_pool_size == 3


def test_cleanup_restores_configuration_and_the_channel_path():
    with UnprivilegedPrivsepFixture(ctx):
        pass
    assert cfg.CONF.fixture_section.capabilities == [caps.CAP_NET_ADMIN]
    assert ctx._loopback is False
