from privsepd.compat.rootwrap_client import Client

# [agent] root_helper_daemon = sudo privsepd helper --context myagent.privileged.default
ROOT_HELPER_DAEMON = ["sudo", "privsepd", "helper", "--context", "myagent.privileged.default"]


def execute(cmd, client=None):
    client = client or Client(ROOT_HELPER_DAEMON)
    returncode, stdout, stderr = client.execute(cmd)
    return returncode, stdout, stderr
