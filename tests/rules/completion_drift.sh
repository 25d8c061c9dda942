#!/usr/bin/env bash
# Holds the shell completions to the programs: walks each binary's --help
# (CLI11's "Subcommands:" and "Options:" sections) through every nested
# command, and fails naming each command or long option a completion file
# lacks. bash completions are run (sourced, asked with COMP_WORDS as bash
# would ask); zsh ones are searched, and checked with `zsh -n` where zsh is.
# Completions may offer more than the binaries have (commands on their way).
set -euo pipefail
ephemera=${1:?usage: completion_drift.sh EPHEMERA EPHEMERAD COMPLETIONS_DIR}
ephemerad=${2:?usage: completion_drift.sh EPHEMERA EPHEMERAD COMPLETIONS_DIR}
dir=${3:?usage: completion_drift.sh EPHEMERA EPHEMERAD COMPLETIONS_DIR}
fail=0

# help BINARY WORDS...: the --help of a (nested) command, without the
# environment that turns ephemera into an askpass helper.
help() {
  local binary=$1
  shift
  env -u EPHEMERA_ASKPASS_ID "$binary" "$@" --help
}

# section NAME: the first word of each entry of a --help section.
section() {
  awk -v name="$1" '
    /^[A-Za-z]+:$/ { in_section = (tolower($0) == tolower(name) ":"); next }
    /^$/ { in_section = 0 }
    in_section && /^  [^ ]/ { print $1 }
  '
}

# long_options: the --names in an Options section's first words (-h,--help).
long_options() {
  section options | tr ',' '\n' | grep -E '^--[a-z]' | sed 's/[=:].*//' || true
}

# bash_offers FILE FUNCTION WORD...: what the bash completion offers for a
# command line ending in WORD... (the last one being completed).
bash_offers() {
  local file=$1 function=$2
  shift 2
  (
    set +euo pipefail
    # shellcheck disable=SC1090
    source "$file"
    COMP_WORDS=("$@")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMP_LINE="$*"
    COMP_POINT=${#COMP_LINE}
    COMPREPLY=()
    "$function"
    printf '%s\n' "${COMPREPLY[@]}"
  )
}

# zsh_has_command FILE WORD: a _describe entry 'WORD:description' in FILE.
zsh_has_command() {
  grep -qF "'$2:" "$1"
}

# zsh_has_option FILE OPTION: an _arguments spec of OPTION in FILE
# ('--opt[...]', '--opt=[...]', or {-o,--opt}'[...]').
zsh_has_option() {
  grep -qE -- "(^|[^A-Za-z0-9_-])$2([=[]|\})" "$1"
}

# walk PROGRAM BINARY BASH_FILE BASH_FUNCTION ZSH_FILE WORDS...: checks the
# command WORDS... and, recursively, those under it.
walk() {
  local program=$1 binary=$2 bash_file=$3 bash_function=$4 zsh_file=$5
  shift 5
  local text commands options word offered command="$program${*:+ $*}"
  text=$(help "$binary" "$@") || {
    echo "FAIL: $command --help failed"
    fail=1
    return
  }
  commands=$(section subcommands <<<"$text")
  options=$(long_options <<<"$text")
  if [ -n "$commands" ]; then
    offered=$(bash_offers "$bash_file" "$bash_function" "$program" "$@" "")
    for word in $commands; do
      if ! grep -qxF -- "$word" <<<"$offered"; then
        echo "FAIL: $bash_file does not offer '$command $word'"
        fail=1
      fi
      if ! zsh_has_command "$zsh_file" "$word"; then
        echo "FAIL: $zsh_file lacks the command '$command $word'"
        fail=1
      fi
    done
  fi
  if [ -n "$options" ]; then
    offered=$(bash_offers "$bash_file" "$bash_function" "$program" "$@" "--")
    for word in $options; do
      if ! grep -qxF -- "$word" <<<"$offered"; then
        echo "FAIL: $bash_file does not offer $word after '$command'"
        fail=1
      fi
      if ! zsh_has_option "$zsh_file" "$word"; then
        echo "FAIL: $zsh_file lacks $word of '$command'"
        fail=1
      fi
    done
  fi
  for word in $commands; do
    walk "$program" "$binary" "$bash_file" "$bash_function" "$zsh_file" "$@" "$word"
  done
}

for file in "$dir/ephemera.bash" "$dir/ephemerad.bash"; do
  bash -n "$file" || {
    echo "FAIL: $file is not valid bash"
    fail=1
  }
done
if command -v zsh >/dev/null; then
  for file in "$dir/_ephemera" "$dir/_ephemerad"; do
    zsh -n "$file" || {
      echo "FAIL: $file is not valid zsh"
      fail=1
    }
  done
else
  echo "zsh is not installed: the zsh completions are searched, not parsed"
fi

walk ephemera "$ephemera" "$dir/ephemera.bash" _ephemera "$dir/_ephemera"
walk ephemerad "$ephemerad" "$dir/ephemerad.bash" _ephemerad "$dir/_ephemerad"

# The walk found something: a --help format it cannot read must not pass.
for expected in "ephemera create" "ephemera image pull" "ephemerad check"; do
  read -r program command <<<"$expected"
  binary=$ephemera
  [ "$program" = ephemerad ] && binary=$ephemerad
  # shellcheck disable=SC2086
  if [ -z "$(help "$binary" $command | long_options)" ]; then
    echo "FAIL: no long option read from '$expected --help'"
    fail=1
  fi
done

[ "$fail" = 0 ] && echo "the completions cover every command and option"
exit "$fail"
