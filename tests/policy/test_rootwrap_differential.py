"""Differential tests: privsepd's rootwrap engine against oslo.rootwrap itself.

oslo.rootwrap (a test-only dependency) is the oracle. One policy tree with
every filter class, real executables (copies/symlinks of /bin/true and
/bin/sleep in private exec_dirs), real processes for KillFilter (one of them
running a deleted executable) and a data tree with symlinks for PathFilter
is loaded by both engines; thousands of generated commands, hostile ones
included, are decided by both. They must agree on outcome, matched filter,
final argv, run-as user and environment additions, except where privsepd
refuses on purpose: then the filter oslo chose must appear in privsepd's
trace refused with a documented deviation code (docs/deviations.md).

oslo reads a filters directory in os.listdir order; privsepd in sorted
order. The oracle gets one directory per file, in sorted order, so both see
the same rule order.
"""

from __future__ import annotations

import collections
import importlib.metadata
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
from conftest import require_feature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oslo_rootwrap import wrapper

from privsepd.errors import PolicyError
from privsepd.policy.filters import DEVIATIONS
from privsepd.policy.rootwrap import load_policy
from privsepd.policy.trust import check_trusted

_BASES = ["/run", "/var/lib", "/root"]

# oslo.rootwrap 7.7 (the newest that installs on Python 3.9) crashes with a
# traceback where 7.9 decides: a lone 'env' (IndexError in EnvFilter), and a
# KillFilter target whose program is gone (TypeError from os.path.isfile(None)).
# oslo-rootwrap then runs nothing; privsepd must refuse too ("oslo-crash").
OSLO_VERSION = tuple(int(x) for x in importlib.metadata.version("oslo_rootwrap").split(".")[:2])
OSLO_CRASHES: tuple[type[Exception], ...] = (IndexError, TypeError) if OSLO_VERSION < (7, 9) else ()
EXAMPLES = 1200  # per generated-command test; 4 such tests

FILTER_FILES = {
    "10-basic.filters": """
[Filters]
# CommandFilter, relative, absolute, missing
echo: CommandFilter, echo, root
cat_abs: CommandFilter, {B1}/cat, root
cat_rel: CommandFilter, cat, root
missing: CommandFilter, missing_tool, root
missing_abs: CommandFilter, /nonexistent/tool, root
true_nobody: CommandFilter, true, nobody
  # odd spacing and a continuation line
spaced   :   CommandFilter ,  tee ,
     root
ls: RegExpFilter, ls, root, ls, -[al]+, /[a-z]+
ls1: RegExpFilter, ls, root, ls
alt: RegExpFilter, echo, root, alt, foo|bar
mflag: RegExpFilter, echo, root, mflag, (?m)ok
anyname: RegExpFilter, {B1}/echo, root, .*, anyname
chown: PathFilter, chown, root, nova, {DATA}
chmod: PathFilter, chmod, root, pass, {DATA}/
rd: ReadFileFilter, /etc/hostname
""",
    "20-kill.filters": """
[Filters]
kill_sleepy: KillFilter, root, {B1}/sleepy, -9, -HUP
kill_sleepy_path: KillFilter, root, sleepy
kill_doomed: KillFilter, root, {B1}/doomed
kill_replaced: KillFilter, root, {B1}/replaced, -TERM
""",
    "30-network.filters": """
[Filters]
ip: IpFilter, ip, root
ip_exec: IpNetnsExecFilter, ip, root
ip_exec_nobody: IpNetnsExecFilter, ip, nobody
dnsmasq: EnvFilter, env, root, CONFIG_FILE=, NETWORK_ID=, dnsmasq
haproxy: EnvFilter, {B1}/haproxy, root, TAG=
preload: EnvFilter, env, root, LD_PRELOAD=, echo
nice: ChainingRegExpFilter, nice, root, nice, -?\\d+
ionice: ChainingRegExpFilter, ionice, root, ionice, -c[0-3], -n[0-7]
noop: ChainingFilter, nice, root
env_cmd: CommandFilter, env, root
bar: CommandFilter, bar, root
""",
    # any suffix is loaded (oslo does too)
    "zz-notes.txt": """
[Filters]
onlyin2: CommandFilter, onlyin2, root
dnsmasq_plain: CommandFilter, dnsmasq, root
""",
}

TRUE_NAMES = [
    "echo",
    "cat",
    "ls",
    "chown",
    "chmod",
    "nice",
    "ionice",
    "ip",
    "dnsmasq",
    "haproxy",
    "tee",
    "bar",
    "env",
    "true",
    "privsep-helper",
]


def _require_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("PRIVSEPD_REQUIRE_ROOT") == "1":
            pytest.fail("differential tests need root (trusted policy files, /proc of others)")
        pytest.skip("differential tests need root (trusted policy files, /proc of others)")


def _safe_base() -> str:
    for base in _BASES:
        try:
            check_trusted(base)
        except PolicyError:
            continue
        path = tempfile.mkdtemp(prefix="privsepd-rwdiff-", dir=base)
        os.chmod(path, 0o755)
        return path
    pytest.fail(f"no root-owned, non-writable base directory among {_BASES}")


def _copy_exe(src: str, dst: str) -> None:
    shutil.copy2(os.path.realpath(shutil.which(src) or src), dst)
    os.chmod(dst, 0o755)


class World:
    """The shared fixture: policy tree, exec dirs, data tree, live processes."""

    def __init__(self, base: str):
        self.base = base
        self.b1 = os.path.join(base, "bin1")
        self.b2 = os.path.join(base, "bin2")
        self.data = os.path.join(base, "data")
        for d in (self.b1, self.b2, self.data, self.data + "2", os.path.join(self.data, "a")):
            os.makedirs(d, mode=0o755)
        for name in TRUE_NAMES:
            os.symlink("/bin/true", os.path.join(self.b1, name))
        os.symlink("/bin/true", os.path.join(self.b2, "onlyin2"))
        os.symlink("/bin/true", os.path.join(self.b2, "cat"))
        for name in ("sleepy", "doomed", "replaced"):
            _copy_exe("sleep", os.path.join(self.b1, name))
        os.symlink(os.path.join(self.data, "a"), os.path.join(self.data, "in_link"))
        os.symlink("/etc", os.path.join(self.data, "out_link"))
        os.symlink(os.path.join(self.data, "loop"), os.path.join(self.data, "loop"))
        self.procs = {}
        for name in ("sleepy", "doomed", "replaced"):
            self.procs[name] = subprocess.Popen([os.path.join(self.b1, name), "600"])
        time.sleep(0.05)
        os.unlink(os.path.join(self.b1, "doomed"))
        os.unlink(os.path.join(self.b1, "replaced"))
        _copy_exe("sleep", os.path.join(self.b1, "replaced"))
        self.pids = {name: str(p.pid) for name, p in self.procs.items()}

        subst = {"{B1}": self.b1, "{DATA}": self.data}
        self.filters_dir = os.path.join(base, "rootwrap.d")
        os.makedirs(self.filters_dir, mode=0o755)
        oracle_dirs = []
        for i, (name, text) in enumerate(sorted(FILTER_FILES.items())):
            for key, value in subst.items():
                text = text.replace(key, value)
            with open(os.path.join(self.filters_dir, name), "w") as f:
                f.write(text)
            odir = os.path.join(base, "oracle", str(i))
            os.makedirs(odir)
            shutil.copy(os.path.join(self.filters_dir, name), odir)
            oracle_dirs.append(odir)
        with open(os.path.join(self.filters_dir, ".hidden"), "w") as f:
            f.write("[Filters]\nhidden: CommandFilter, hidden, root\n")
        self.conf = os.path.join(base, "rootwrap.conf")
        with open(self.conf, "w") as f:
            f.write(
                f"[DEFAULT]\nfilters_path={self.filters_dir},/nonexistent/rootwrap.d\n"
                f"exec_dirs={self.b1},{self.b2}\n"
            )
        self.exec_dirs = [self.b1, self.b2]
        self.policy = load_policy(self.conf)
        self.oracle = wrapper.load_filters(oracle_dirs)
        self.positions = {id(f): i for i, f in enumerate(self.policy.filters)}

    def close(self) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(self.base)


@pytest.fixture(scope="module")
def world():
    _require_root()
    base = _safe_base()
    old_path = os.environ.get("PATH", "")
    w = World(base)
    os.environ["PATH"] = f"{w.b1}:{old_path}"
    try:
        yield w
    finally:
        os.environ["PATH"] = old_path
        w.close()


def oslo_decide(w: World, argv: list[str]):
    """What oslo-rootwrap would run: its start_subprocess minus the exec."""
    userargs = list(argv)
    try:
        f = wrapper.match_filter(w.oracle, userargs, w.exec_dirs)
    except wrapper.NoFilterMatched:
        return ("no-match", None, None, None, None)
    except wrapper.FilterMatchNotExecutable as exc:
        return ("not-executable", w.oracle.index(exc.match), None, None, None)
    except OSLO_CRASHES:
        return ("oslo-crash", None, None, None, None)
    command = f.get_command(userargs, w.exec_dirs)
    env = f.get_environment(userargs)
    added = {} if env is None else {k: v for k, v in env.items() if os.environ.get(k) != v}
    return ("allow", w.oracle.index(f), command, f.run_as, added)


def privsepd_decide(w: World, argv: list[str]):
    d = w.policy.match(argv)
    pos = None if d.filter is None else w.positions[id(d.filter)]
    command = None if d.command is None else list(d.command)
    if d.outcome == "allow":
        return d, ("allow", pos, command, d.run_as, dict(d.env))
    return d, (d.outcome, pos, None, None, None)


STATS: collections.Counter = collections.Counter()  # generated commands only
HOSTILE_STATS: collections.Counter = collections.Counter()


def compare(w: World, argv: list[str], stats: collections.Counter | None = None) -> str:
    """Assert agreement or a documented deviation; return the class of the case."""
    expected = oslo_decide(w, argv)
    decision, got = privsepd_decide(w, argv)
    if got == expected:
        kind = f"agree-{got[0]}"
    elif expected[0] == "oslo-crash":
        assert got[0] != "allow", (argv, expected, got)
        kind = "oslo-crash"
    else:
        assert expected[0] in ("allow", "not-executable"), (argv, expected, got)
        oslo_filter = w.policy.filters[expected[1]]
        refused = [
            c.miss.code
            for c in decision.trace
            if c.filter is oslo_filter and c.miss is not None and c.miss.code in DEVIATIONS
        ]
        assert refused, (argv, expected, got, decision.trace)
        kind = f"deviation-{refused[0]}"
    (STATS if stats is None else stats)[kind] += 1
    return kind


# --- generators ----------------------------------------------------------------


def _words(w: World) -> dict[str, list[str]]:
    d = w.data
    return {
        "commands": [
            "echo",
            "cat",
            f"{w.b1}/cat",
            "/tmp/x/cat",
            "missing_tool",
            "/nonexistent/tool",
            "true",
            "ls",
            "ls\n",
            "alt",
            "mflag",
            "whatever",
            "chown",
            "chmod",
            "kill",
            "ip",
            "env",
            "dnsmasq",
            "haproxy",
            f"{w.b1}/haproxy",
            "nice",
            "ionice",
            "bar",
            "tee",
            "privsep-helper",
            "onlyin2",
            "sleepy",
        ],
        "args": [
            "-a",
            "-l",
            "-al",
            "/root",
            "/root\n",
            "root",
            "foo",
            "bar",
            "foo\n",
            "fooX",
            "barbaz",
            "ok",
            "ok\nX",
            "anyname",
            "nova",
            "nova2",
            "pass",
            f"{d}/x",
            d,
            f"{d}/",
            f"{d}2/x",
            f"{d}/a/../x",
            f"{d}/../etc",
            f"{d}/in_link",
            f"{d}/out_link/passwd",
            f"{d}/loop/../../etc/passwd",
            f"{d}/loop/x",
            "relative",
            "netns",
            "net",
            "exec",
            "e",
            "NETNS",
            "EXEC",
            "-b",
            "-batch",
            "--batch",
            "-br",
            "-n",
            "link",
            "list",
            "ns1",
            "CONFIG_FILE=x",
            "CONFIG_FILE=",
            "NETWORK_ID=1",
            "TAG=t",
            "TAG=",
            "LD_PRELOAD=/tmp/x.so",
            "env",
            "5",
            "-5",
            "--5",
            "\u0661\u0662\u0663",  # ARABIC-INDIC 123: Unicode \d, not ASCII
            "-\uff11\uff12",  # FULLWIDTH 12
            "-c2",
            "-n7",
            "-9",
            "-HUP",
            "-TERM",
            "-ALRM",
            "echo",
            "/tmp/x/echo",
            f"{w.b1}/echo",
            "cat",
            "ls",
            "ip",
            "dnsmasq",
            "A=1",
            "",
            " ",
            "/etc/hostname",
            *w.pids.values(),
            str(os.getpid()),
            "999999",
            " 1",
            "+" + w.pids["sleepy"],
        ],
    }


def random_commands(w: World):
    words = _words(w)
    # execve() cannot carry NUL; sys.argv only holds surrogates from surrogateescape
    text = st.text(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=4
    )
    word = st.one_of(st.sampled_from(words["args"]), text)
    return st.builds(
        lambda c, rest: [c, *rest],
        st.sampled_from(words["commands"]),
        st.lists(word, max_size=6),
    )


def env_commands(w: World):
    assigns = ["CONFIG_FILE=x", "CONFIG_FILE=", "NETWORK_ID=1", "NETWORK_ID=2", "TAG=t", "TAG="]
    assigns += ["LD_PRELOAD=/tmp/x.so", "LD_PRELOAD=", "A=1", "=x"]
    cmds = ["dnsmasq", "haproxy", f"{w.b1}/haproxy", "echo", "bar", "env", "/tmp/x/dnsmasq"]
    return st.builds(
        lambda envs, pre, cmd, rest: [*pre, *envs, cmd, *rest],
        st.lists(st.sampled_from(assigns), max_size=4),
        st.sampled_from([[], ["env"], ["env", "env"]]),
        st.sampled_from(cmds),
        st.lists(st.sampled_from(["--foo", "x", "A=2"]), max_size=2),
    )


def chain_commands(w: World, inner):
    heads = st.one_of(
        st.builds(
            lambda n: ["nice", n],
            st.sampled_from(["5", "-5", "--5", "x", "5\n", "\u0661\u0662\u0663", "-\uff11\uff12"]),
        ),
        st.builds(
            lambda c, n: ["ionice", c, n],
            st.sampled_from(["-c2", "-c9", "-c2\n"]),
            st.sampled_from(["-n7", "-n8"]),
        ),
        st.builds(
            lambda a, b: ["ip", a, b, "ns1"],
            st.sampled_from(["netns", "net", "netn", "NETNS", "link"]),
            st.sampled_from(["exec", "e", "EXEC", "list"]),
        ),
        st.builds(lambda b: ["ip", b], st.sampled_from(["-b", "-batch", "--batch", "-force"])),
    )
    return st.builds(lambda h, rest: [*h, *rest], heads, inner)


def kill_and_path_commands(w: World):
    pids = [*w.pids.values(), str(os.getpid()), "999999", "+" + w.pids["sleepy"], "x"]
    kill = st.builds(
        lambda sig, pid: ["kill", *sig, pid],
        st.sampled_from([[], ["-9"], ["-HUP"], ["-TERM"], ["-ALRM"]]),
        st.sampled_from(pids),
    )
    d = w.data
    paths = [f"{d}/x", d, f"{d}/", f"{d}2/x", f"{d}/a/../x", f"{d}/../etc", f"{d}/in_link"]
    paths += [f"{d}/out_link/passwd", f"{d}/loop/../../etc/passwd", f"{d}/loop/x", "relative"]
    path = st.builds(
        lambda c, who, p: [c, who, p],
        st.sampled_from(["chown", "chmod", "/bin/chown", "/usr/bin/chown"]),
        st.sampled_from(["nova", "nova2", "pass", "anything"]),
        st.sampled_from(paths),
    )
    return st.one_of(kill, path)


_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- tests ---------------------------------------------------------------------


def test_both_engines_load_the_same_rules_in_the_same_order(world):
    ours = [(f.name, f.kind, f.exec_path, f.run_as, f.args) for f in world.policy.filters]
    theirs = [
        (f.name, type(f).__name__, f.exec_path, f.run_as, tuple(f.args)) for f in world.oracle
    ]
    # ReadFileFilter/KillFilter keep their leading column outside args in oslo
    assert [o[:2] for o in ours] == [t[:2] for t in theirs]
    assert [o[2:] for o in ours] == [t[2:] for t in theirs]


@_SETTINGS
@given(data=st.data())
def test_random_commands_agree_with_oslo_or_deviate_as_documented(world, data):
    compare(world, data.draw(random_commands(world)))


@_SETTINGS
@given(data=st.data())
def test_env_commands_agree_with_oslo_or_deviate_as_documented(world, data):
    compare(world, data.draw(env_commands(world)))


@_SETTINGS
@given(data=st.data())
def test_chained_commands_agree_with_oslo_or_deviate_as_documented(world, data):
    inner = st.one_of(random_commands(world), env_commands(world), kill_and_path_commands(world))
    compare(world, data.draw(chain_commands(world, inner)))


@_SETTINGS
@given(data=st.data())
def test_kill_and_path_commands_agree_with_oslo_or_deviate_as_documented(world, data):
    compare(world, data.draw(kill_and_path_commands(world)))


HOSTILE = [
    # (argv template, expected class)
    (["ls", "-al", "/root"], "agree-allow"),
    (["ls", "-al", "/root\n"], "deviation-regex-anchor"),
    (["ls\n", "-al", "/root"], "deviation-regex-anchor"),
    (["alt", "fooEVIL"], "deviation-regex-anchor"),
    (["mflag", "ok\nEVIL"], "deviation-regex-anchor"),
    (["chown", "nova", "{DATA}/x"], "agree-allow"),
    (["chown", "nova", "{DATA}2/x"], "deviation-path-prefix"),
    (["chown", "nova", "{DATA}/a/../x"], "agree-allow"),
    (["chown", "nova", "{DATA}/../etc/passwd"], "agree-no-match"),
    (["chown", "nova", "{DATA}/in_link"], "agree-allow"),
    (["chown", "nova", "{DATA}/out_link/passwd"], "agree-no-match"),
    (["chown", "nova", "{DATA}/loop/../../etc/passwd"], "agree-no-match"),
    (["chown", "nova", "{DATA}/loop/x"], "deviation-path-unresolved"),
    (["chmod", "0600", "{DATA}"], "agree-no-match"),
    (["nice", "5", "echo", "hi"], "agree-allow"),
    (["nice", "5", "/tmp/x/echo", "hi"], "deviation-chain-path"),
    (["nice", "5", "sh", "-c", "id"], "agree-no-match"),
    (["nice", "5\n", "echo"], "deviation-regex-anchor"),
    (["nice", "\u0661\u0662\u0663", "echo"], "deviation-regex-unicode"),
    (["nice", "-\uff11\uff12", "echo"], "deviation-regex-unicode"),
    (["ip", "netns", "exec", "ns1", "/tmp/x/echo"], "deviation-chain-path"),
    (["ip", "netns", "exec", "ns1", "sh"], "agree-no-match"),
    (["ip", "netns", "exec", "ns1", "ls", "-al", "/root\n"], "deviation-regex-anchor"),
    (["ip", "-b", "/tmp/cmds"], "deviation-ip-batch"),
    (["ip", "--batch", "-"], "deviation-ip-batch"),
    (["ip", "NETNS", "EXEC", "ns1", "sh"], "deviation-ip-netns-exec"),
    (["ip", "-n", "netns", "netns", "exec", "sh"], "deviation-ip-netns-exec"),
    (["ip", "link", "list"], "agree-allow"),
    (["env", "CONFIG_FILE=a", "NETWORK_ID=b", "dnsmasq", "x"], "agree-allow"),
    (["env", "CONFIG_FILE=", "NETWORK_ID=b", "dnsmasq"], "deviation-env-empty-value"),
    (["env", "LD_PRELOAD=/tmp/x.so", "echo"], "deviation-env-dangerous"),
    (["env", "bar", "x"], "deviation-env-argv-mutation"),
    (["kill", "-9", "{sleepy}"], "agree-allow"),
    (["kill", "-9", "+{sleepy}"], "deviation-kill-pid-syntax"),
    (["kill", "{doomed}"], "oslo-crash" if OSLO_CRASHES else "deviation-kill-deleted-exe"),
    (["kill", "-TERM", "{replaced}"], "deviation-kill-deleted-exe"),
    (["kill", "-9", "{self}"], "agree-no-match"),
    (["missing_tool"], "agree-not-executable"),
    (["true"], "agree-allow"),
    (["privsep-helper", "--help"], "deviation-privsep-helper"),
    (["hidden"], "agree-no-match"),
    (["onlyin2"], "agree-allow"),
]


@pytest.mark.parametrize(("template", "expected"), HOSTILE, ids=[" ".join(h[0]) for h in HOSTILE])
def test_hostile_command_is_classified(world, template, expected):
    subst = {"{DATA}": world.data, "{self}": str(os.getpid())}
    subst.update({"{" + k + "}": v for k, v in world.pids.items()})
    argv = []
    for word in template:
        for key, value in subst.items():
            word = word.replace(key, value)
        argv.append(word)
    assert compare(world, argv, HOSTILE_STATS) == expected


def test_generated_commands_cover_every_outcome_and_deviation_class(world):
    """Runs last in this module: the generators really reached every class."""
    require_feature(bool(STATS), "the generated-command tests of this module running first")
    print(dict(STATS))
    for kind in ("agree-allow", "agree-no-match", "agree-not-executable"):
        assert STATS[kind] > 0, kind
    # The hand-written hostile cases count too: which rare classes the
    # generators reach depends on the interpreter's hypothesis draw (3.9 drew
    # no chain-path case), the hostile list names each one.
    seen = {
        k.removeprefix("deviation-") for k in STATS + HOSTILE_STATS if k.startswith("deviation-")
    }
    # bad-user and kill-untrusted-dir have their own tests (test_rootwrap_deviations);
    # privsep-helper too (tests/policy/test_privsep_helper_rule.py).
    own = {"bad-user", "kill-untrusted-dir", "privsep-helper"}
    if OSLO_CRASHES:  # oslo 7.7 crashes on a deleted executable instead of allowing it
        own.add("kill-deleted-exe")
    assert seen >= DEVIATIONS - own, sorted(DEVIATIONS - seen)
