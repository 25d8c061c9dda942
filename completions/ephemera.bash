# bash completion for ephemera(1): every command, nested command and option.
# tests/rules/completion_drift.sh holds it to the binary's --help.
# shellcheck shell=bash

# The commands under a command path ("" for the top).
_ephemera_commands() {
  case $1 in
    "") echo "create list show destroy pause resume extend status exec cp ssh port image token server events top" ;;
    port) echo "add list rm" ;;
    image) echo "list inspect rm prune pull" ;;
    token) echo "add list enable disable delete" ;;
    server) echo "list forget" ;;
  esac
}

# The options of a command path; the global ones are taken after any command.
_ephemera_options() {
  case $1 in
    "") echo "-h --help --version --socket --remote --token --pin --json" ;;
    create) echo "--kind --image --kernel --rootfs --run-id --name --memory --vcpus --ttl --idle-timeout --egress --allow" ;;
    list) echo "--inventory --run-id" ;;
    extend) echo "--ttl" ;;
    exec) echo "-t --tty -i --interactive -e --env -w --workdir -u --user --timeout" ;;
    cp) echo "--tar" ;;
    "image pull") echo "--kernel --rootfs --headroom" ;;
    "token add") echo "--name --expires-in --max-sandboxes --rate" ;;
    events) echo "-f --follow --json --since" ;;
    top) echo "--interval --once" ;;
  esac
}

# Options whose value is the next word.
_ephemera_takes_value() {
  case $1 in
    --socket | --remote | --token | --pin | --kind | --image | --kernel | --rootfs | --run-id | \
      --name | --memory | --vcpus | --ttl | --idle-timeout | --egress | --allow | -e | --env | \
      -w | --workdir | -u | --user | --timeout | --headroom | --expires-in | --max-sandboxes | \
      --rate | --since | --interval)
      return 0
      ;;
  esac
  return 1
}

# Sandboxes this user created, from the client's own record (no daemon asked).
_ephemera_remembered_ids() {
  local file=${XDG_CONFIG_HOME:-$HOME/.config}/ephemera/sandboxes.json
  [[ -r $file ]] && sed -n 's/^  "\([^"]*\)": {.*$/\1/p' "$file"
}

_ephemera_pinned_servers() {
  local file=${XDG_CONFIG_HOME:-$HOME/.config}/ephemera/servers.json
  [[ -r $file ]] && sed -n 's/^    "\(https\{0,1\}:[^"]*\)": {.*$/\1/p' "$file"
}

_ephemera_reply() {
  mapfile -t COMPREPLY < <(compgen -W "$1" -- "$cur" | awk '!seen[$0]++')
  # A word with a colon (a URL) is completed from after the colon.
  if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
    local prefix=${cur%"${cur##*:}"}
    COMPREPLY=("${COMPREPLY[@]#"$prefix"}")
  fi
}

_ephemera_files() {
  compopt -o filenames 2>/dev/null
  mapfile -t COMPREPLY < <(compgen -f -- "$cur")
}

_ephemera() {
  local cur prev words cword
  if declare -F _get_comp_words_by_ref >/dev/null; then
    _get_comp_words_by_ref -n := cur prev words cword
  else
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
    cur=${words[cword]}
    prev=${words[cword - 1]}
  fi
  COMPREPLY=()

  # The command path, and how many positional words follow it.
  local path="" positional=0 word subs i
  for ((i = 1; i < cword; i++)); do
    word=${words[i]}
    if [[ $word == -- ]]; then
      _ephemera_files # a command for the guest
      return
    elif [[ $word == -*=* ]]; then
      continue
    elif [[ $word == -* ]]; then
      if _ephemera_takes_value "$word"; then
        [[ ${words[i + 1]} == = ]] && ((i++))
        ((i++))
      fi
      continue
    fi
    subs=$(_ephemera_commands "$path")
    if ((positional == 0)) && [[ " $subs " == *" $word "* ]]; then
      path="${path:+$path }$word"
    else
      ((positional++))
    fi
  done

  [[ $prev == = ]] && prev=${words[cword - 2]}
  if [[ $cur == -*=* ]]; then
    prev=${cur%%=*}
    cur=${cur#*=}
  fi
  case $prev in
    --socket)
      _ephemera_files
      return
      ;;
    --kind)
      _ephemera_reply "vm container"
      return
      ;;
    --egress)
      _ephemera_reply "none all allow"
      return
      ;;
    --remote)
      _ephemera_reply "$(_ephemera_pinned_servers)"
      return
      ;;
  esac
  if _ephemera_takes_value "$prev"; then
    return
  fi

  if [[ $cur == -* ]]; then
    _ephemera_reply "$(_ephemera_options "$path") $(_ephemera_options "")"
    return
  fi
  subs=$(_ephemera_commands "$path")
  if [[ -n $subs ]]; then
    _ephemera_reply "$subs"
    return
  fi
  case $path in
    show | destroy | pause | resume | extend | exec | ssh | "port add" | "port list" | "port rm")
      ((positional == 0)) && _ephemera_reply "$(_ephemera_remembered_ids)"
      ;;
    cp)
      _ephemera_files
      ;;
    "server forget")
      _ephemera_reply "$(_ephemera_pinned_servers)"
      ;;
  esac
}

complete -F _ephemera ephemera
