# Sourced by demo.sh and test.sh: makes .venv if it is missing and installs jaxviz into it
# with the extras in $extras ("[digits]" or "[torch,test]"), only when pyproject.toml or the extras
# changed since the last install (a stamp file in .venv records what was installed).
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.jaxviz-installed${extras:+-$(printf %s "$extras" | tr -cd 'a-z,')}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${extras}"
if [ ! -x .venv/bin/jaxviz ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing jaxviz${extras} into .venv ..." >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
  printf '%s\n' "$want" > "$stamp"
fi
