#!/bin/sh
# Copy this worktree's src/, bench/ and tests/ into the main checkout's ignored .perf/ (the device tool sends /work/main).
set -e
here=$(cd "$(dirname "$0")/../.." && pwd)
dst=/work/main/.perf
grep -qx '/.perf/' /work/main/.git/info/exclude || echo '/.perf/' >> /work/main/.git/info/exclude
rm -rf "$dst" && mkdir -p "$dst"
cp -r "$here/src" "$here/bench" "$here/tests" "$here/pyproject.toml" "$dst/"
find "$dst" -name __pycache__ -prune -exec rm -rf {} +
du -sh "$dst"
