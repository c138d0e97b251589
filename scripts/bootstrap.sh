# Sourced by scripts/run and scripts/test: makes sure uv is there and the locked environment is
# installed. Needs only python3 (3.11+); uv comes from PyPI when it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v uv >/dev/null 2>&1; then
  for dir in "$HOME/.local/bin" ".penguinmails/tools/bin"; do
    [ -x "$dir/uv" ] && export PATH="$PWD/$dir:$dir:$PATH" && break
  done
fi
if ! command -v uv >/dev/null 2>&1; then
  echo "penguinmails: installing uv with pip" >&2
  if ! python3 -m pip install --quiet --user uv 2>/dev/null; then
    # PEP 668 systems refuse a --user install: give uv a venv of its own.
    python3 -m venv .penguinmails/tools
    .penguinmails/tools/bin/pip install --quiet uv
  fi
  export PATH="$HOME/.local/bin:$PWD/.penguinmails/tools/bin:$PATH"
fi

# Trust the system's certificate store too (proxies and private registries add their CA there).
export UV_SYSTEM_CERTS="${UV_SYSTEM_CERTS:-true}"
uv sync --frozen --quiet
