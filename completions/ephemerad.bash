# bash completion for ephemerad(8): its options and the check and cleanup commands.
# tests/rules/completion_drift.sh holds it to the binary's --help.
# shellcheck shell=bash

_ephemerad() {
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

  local options="-h --help --version --config --state-dir --image-dir --log-level --log-format
    --socket --listen --anweddol-listen --anweddol-web-listen --insecure-http --no-access-tokens"
  local check_options="-h --help --image --memory --boot-timeout"
  local takes_value="--config --state-dir --image-dir --log-level --log-format --socket --listen
    --anweddol-listen --anweddol-web-listen --image --memory --boot-timeout"

  local command="" word i
  for ((i = 1; i < cword; i++)); do
    word=${words[i]}
    if [[ $word == -*=* ]]; then
      continue
    elif [[ $word == -* ]]; then
      if [[ " ${takes_value//$'\n'/ } " == *" $word "* ]]; then
        [[ ${words[i + 1]} == = ]] && ((i++))
        ((i++))
      fi
    elif [[ -z $command && ($word == check || $word == cleanup) ]]; then
      command=$word
    fi
  done

  [[ $prev == = ]] && prev=${words[cword - 2]}
  if [[ $cur == -*=* ]]; then
    prev=${cur%%=*}
    cur=${cur#*=}
  fi
  local values=""
  case $prev in
    --config | --socket)
      compopt -o filenames 2>/dev/null
      mapfile -t COMPREPLY < <(compgen -f -- "$cur")
      return
      ;;
    --state-dir | --image-dir)
      compopt -o filenames 2>/dev/null
      mapfile -t COMPREPLY < <(compgen -d -- "$cur")
      return
      ;;
    --log-level) values="trace debug info warn error" ;;
    --log-format) values="text json journal" ;;
    *)
      if [[ " ${takes_value//$'\n'/ } " == *" $prev "* ]]; then
        return
      fi
      if [[ $cur == -* ]]; then
        case $command in
          check) values=$check_options ;;
          cleanup) values="--help" ;;
          *) values=$options ;;
        esac
      elif [[ -z $command ]]; then
        values="check cleanup"
      fi
      ;;
  esac
  mapfile -t COMPREPLY < <(compgen -W "$values" -- "$cur")
}

complete -F _ephemerad ephemerad
