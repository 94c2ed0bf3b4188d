#!/usr/bin/env bash
# The unit tests once more, from a copy of the checkout with nothing beside it: a user's clone has no
# ../shared, so every test that reads it must skip with its reason there, and nothing may assert what only
# that data holds (issue 24). The copy takes the working tree's tracked files, edits included.
set -euo pipefail
cd "$(dirname "$0")/.."
bare=$(mktemp -d /tmp/dnsc-bare-copy.XXXXXX)
chmod 755 "$bare"  # tests run commands as an unprivileged user, who must read the copy
trap 'rm -rf "$bare"' EXIT INT TERM HUP
git ls-files -z | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$bare"
ln -s "$PWD/.venv" "$bare/.venv"
[ ! -e "$bare/../shared" ] || { echo "test-bare-copy: $bare/../shared exists; the copy is not bare" >&2; exit 1; }
cd "$bare"
echo "unit tests from a bare copy: $bare (no ../shared beside it)"
PYTHONPATH="$bare" .venv/bin/python -m pytest -q -p no:cacheprovider tests/unit
