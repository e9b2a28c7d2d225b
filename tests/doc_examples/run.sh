#!/usr/bin/env bash
# tests/doc_examples/run.sh — compiles every code example of the
# documentation, so an example cannot drift from the API (CTest:
# doc_examples). The examples are
#   - in each include/synk/*.hpp, the indented lines ("//   code") of the
#     header's opening comment, each run of consecutive such lines one
#     example;
#   - in README.md, every ```cpp block.
# Each example becomes one translation unit: context.hpp (synk, common std
# headers and the names examples use without declaring them), the
# example's #include lines, then the example inside a function body (a
# fragment) or as it is (one that defines main()). `#line` makes a
# compiler error point at the header or README line. A line holding only
# "..." (code left out) is dropped. Compiled with -fsyntax-only.
#
#   tests/doc_examples/run.sh <c++ compiler> <source dir> <build include dir> [compiler flags...]
set -uo pipefail
if (($# < 3)); then
  echo "usage: $0 <c++ compiler> <source dir> <build include dir> [compiler flags...]" >&2
  exit 2
fi
cxx=$1 src=$2 gen_include=$3
shift 3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Examples that are known not to compile, as "<file>#<n>" (n: the example's
# number within its file, from 1). Each must still fail; once it compiles,
# take it off this list.
known_broken=(
)

# Writes every example of file $1 (relative to $src) as $tmp/<k>.code, with
# its first line "<file>#<n> <line of its first code line>".
extract() {
  local rel=$1
  case $rel in
    *.hpp)
      awk -v rel="$rel" -v dir="$tmp" -v base="$(ls "$tmp" | wc -l)" '
        !/^\/\// { exit }                       # the opening comment ends
        /^\/\/   / {
          if (!inside) { n++; out = sprintf("%s/%04d.code", dir, base + n); print rel "#" n " " NR > out }
          inside = 1; print substr($0, 6) > out; next
        }
        { inside = 0; if (out) close(out) }' "$src/$rel" ;;
    *.md)
      awk -v rel="$rel" -v dir="$tmp" -v base="$(ls "$tmp" | wc -l)" '
        /^```cpp[[:space:]]*$/ { inside = 1; n++; out = sprintf("%s/%04d.code", dir, base + n); print rel "#" n " " NR + 1 > out; next }
        /^```/ { if (inside) close(out); inside = 0; next }
        inside { print > out }' "$src/$rel" ;;
  esac
}

for h in "$src"/include/synk/*.hpp; do extract "include/synk/$(basename "$h")"; done
extract README.md

total=0 failed=0 still_broken=0
for code in "$tmp"/*.code; do
  [[ -e $code ]] || continue
  read -r id first < "$code"
  file=${id%#*}
  tu=${code%.code}.cpp
  body=$(tail -n +2 "$code")
  {
    echo "// $id (tests/doc_examples/run.sh)"
    echo "#include \"context.hpp\""
    grep -E '^[[:space:]]*#[[:space:]]*include' <<<"$body"
    if grep -qE '(^|[^[:alnum:]_])main[[:space:]]*\(' <<<"$body"; then
      echo "#line $first \"$src/$file\""
      sed -E 's/^[[:space:]]*#[[:space:]]*include.*//; s/^[[:space:]]*\.\.\.[[:space:]]*$//' <<<"$body"
    else
      echo "void synk_doc_example() {"
      echo "using namespace synk_doc;"
      echo "#line $first \"$src/$file\""
      sed -E 's/^[[:space:]]*#[[:space:]]*include.*//; s/^[[:space:]]*\.\.\.[[:space:]]*$//' <<<"$body"
      echo "}"
    fi
  } > "$tu"
  total=$((total + 1))
  broken=0
  for k in "${known_broken[@]}"; do [[ $k == "$id" ]] && broken=1; done
  if "$cxx" -std=c++20 -fsyntax-only -I"$here" -I"$src/include" -I"$gen_include" "$@" "$tu" 2> "$tu.log"; then
    if ((broken)); then
      echo "FAIL $id: compiles now; take it off known_broken in $0"
      failed=$((failed + 1))
    else
      echo "ok   $id"
    fi
  elif ((broken)); then
    echo "ok   $id (known not to compile)"
    still_broken=$((still_broken + 1))
  else
    echo "FAIL $id (line $first of $file) does not compile:"
    sed 's/^/    /' "$tu.log" | head -40
    failed=$((failed + 1))
  fi
done

echo "doc_examples: $total examples, $failed failed, $still_broken known not to compile"
((total > 0)) || { echo "doc_examples: no examples found under $src" >&2; exit 1; }
((failed == 0))
