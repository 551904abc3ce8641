#!/bin/sh
# The mechanical part of the migration, run from the service's source tree
# ($1) and its rootwrap filters ($2); prints the [[command]] rules.
set -eu
grep -rl --include='*.py' 'oslo_privsep' "$1" |
    xargs sed -i 's/\boslo_privsep\b/privsepd.compat.oslo_privsep/g'
privsepd filters convert --context myagent.privileged.default "$2"
