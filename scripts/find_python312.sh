#!/usr/bin/env bash
# Print the path of a working Python 3.12 interpreter, or nothing.
# pyenv shims answer for versions that are installed but not selected, so each candidate is run.
candidates=(python3.12)
if command -v pyenv >/dev/null 2>&1; then
  for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -V -r); do
    candidates+=("$(pyenv root)/versions/$v/bin/python")
  done
fi
candidates+=(/usr/bin/python3.12 /usr/local/bin/python3.12 python3)
for c in "${candidates[@]}"; do
  if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
    command -v "$c"
    exit 0
  fi
done
