#!/bin/sh
# cmake/sa_help_all.sh — the program help2man reads to write a command's man
# page (see sa_add_manpage in the top-level CMakeLists.txt).  SA_HELP_BIN
# names the real binary.  "--version" is passed through; "--help" prints the
# binary's --help followed, when SA_HELP_SUBCOMMANDS=1, by the --help of each
# command listed under its "commands:" heading that has one (exit status 0),
# so the page documents every option and is regenerated from the binary at
# each build instead of copied by hand.
set -eu
bin=${SA_HELP_BIN:?SA_HELP_BIN must name the binary}
case ${1:-} in
--version) exec "$bin" --version ;;
--help) ;;
*) echo "usage: SA_HELP_BIN=BIN $0 --help|--version" >&2; exit 64 ;;
esac

top=$("$bin" --help)
printf '%s\n' "$top"
[ "${SA_HELP_SUBCOMMANDS:-0}" = 1 ] || exit 0

# The command names: the first word of each line indented by two spaces in
# the paragraph after a line "commands:".
cmds=$(printf '%s\n' "$top" | awk '
  /^commands:$/ { in_cmds = 1; next }
  in_cmds && /^$/ { exit }
  in_cmds && /^  [a-z][a-z0-9-]*( |$)/ { print $1 }')
[ -n "$cmds" ] || { echo "$0: $bin --help lists no commands" >&2; exit 1; }
for c in $cmds; do
    # A command without a help of its own (e.g. one not yet available) is
    # left out rather than documented by an error message.
    if sub=$("$bin" "$c" --help 2>/dev/null); then
        printf '\n%s %s:\n\n%s\n' "${bin##*/}" "$c" "$sub"
    fi
done
