#!/usr/bin/env bash
# Installs the four coding-agent CLIs the agent tests drive (integration/tests/agents.rs), at
# pinned versions, into PREFIX (`make agents`: .tools/agents). Idempotent.
#   usage: install.sh PREFIX [component...]     components: claude codex llm aider (default: all)
# Layout:
#   PREFIX/npm/node_modules/.bin/{claude,codex}   (npm --prefix PREFIX/npm)
#   PREFIX/venv/bin/llm                           (python venv; llm core already speaks the
#                                                  Responses API: `responses: true` in
#                                                  extra-openai-models.yaml, no plugin needed)
#   PREFIX/venv-aider/bin/aider                   (separate venv: aider pins many deps exactly)
# Re-running is cheap: each component is skipped when the pinned version is already present.
# Writes PREFIX/install-times.txt (component, seconds, disk size).
set -euo pipefail

CLAUDE_CODE_VERSION="${CLAUDE_CODE_VERSION:-2.1.332}"
CODEX_VERSION="${CODEX_VERSION:-0.171.0}"
LLM_VERSION="${LLM_VERSION:-0.36}"
AIDER_VERSION="${AIDER_VERSION:-0.86.2}"
PYTHON="${PYTHON:-python3}"   # aider-chat 0.86 needs Python 3.10-3.12

PREFIX="${1:?usage: install.sh PREFIX [claude|codex|llm|aider ...]}"
shift || true
COMPONENTS=("$@")
[ ${#COMPONENTS[@]} -eq 0 ] && COMPONENTS=(claude codex llm aider)
mkdir -p "$PREFIX"
PREFIX="$(cd "$PREFIX" && pwd)"
LOG="$PREFIX/install-times.txt"

timed() { # name dir cmd...
  local name="$1" dir="$2"; shift 2
  local t0=$SECONDS
  "$@"
  printf '%s\t%ss\t%s\n' "$name" "$((SECONDS - t0))" "$(du -sh "$dir" | cut -f1)" | tee -a "$LOG"
}

npm_pkg_version() { # pkgname -> installed version or empty
  local f="$PREFIX/npm/node_modules/$1/package.json"
  [ -f "$f" ] && node -p "require('$f').version" 2>/dev/null || true
}

npm_install() {
  mkdir -p "$PREFIX/npm"
  [ -f "$PREFIX/npm/package.json" ] || echo '{"private":true}' > "$PREFIX/npm/package.json"
  npm install --prefix "$PREFIX/npm" --no-audit --no-fund --save-exact "$@"
}

for c in "${COMPONENTS[@]}"; do
  case "$c" in
    claude)
      if [ "$(npm_pkg_version @anthropic-ai/claude-code)" = "$CLAUDE_CODE_VERSION" ] \
         && "$PREFIX/npm/node_modules/.bin/claude" --version >/dev/null 2>&1; then
        echo "claude-code $CLAUDE_CODE_VERSION already installed"
      else
        # the native binary comes from the optionalDependency @anthropic-ai/claude-code-linux-x64
        timed claude-code "$PREFIX/npm/node_modules/@anthropic-ai" \
          npm_install "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION"
      fi ;;
    codex)
      if [ "$(npm_pkg_version @openai/codex)" = "$CODEX_VERSION" ] \
         && "$PREFIX/npm/node_modules/.bin/codex" --version >/dev/null 2>&1; then
        echo "codex $CODEX_VERSION already installed"
      else
        timed codex "$PREFIX/npm/node_modules/@openai" npm_install "@openai/codex@$CODEX_VERSION"
      fi ;;
    llm)
      if "$PREFIX/venv/bin/python" -c "import importlib.metadata as m,sys; sys.exit(not (m.version('llm')=='$LLM_VERSION'))" 2>/dev/null; then
        echo "llm $LLM_VERSION already installed"
      else
        timed llm "$PREFIX/venv" bash -c "
          [ -x '$PREFIX/venv/bin/python' ] || '$PYTHON' -m venv '$PREFIX/venv'
          '$PREFIX/venv/bin/pip' install -q --disable-pip-version-check \
            'llm==$LLM_VERSION'"
      fi ;;
    aider)
      if "$PREFIX/venv-aider/bin/python" -c "import importlib.metadata as m,sys; sys.exit(m.version('aider-chat')!='$AIDER_VERSION')" 2>/dev/null; then
        echo "aider-chat $AIDER_VERSION already installed"
      else
        timed aider-chat "$PREFIX/venv-aider" bash -c "
          [ -x '$PREFIX/venv-aider/bin/python' ] || '$PYTHON' -m venv '$PREFIX/venv-aider'
          '$PREFIX/venv-aider/bin/pip' install -q --disable-pip-version-check 'aider-chat==$AIDER_VERSION'"
      fi ;;
    *) echo "unknown component: $c" >&2; exit 2 ;;
  esac
done
