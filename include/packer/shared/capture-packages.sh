#!/bin/sh
# Capture the installed package set of the image being built (runs as root in the build VM, after
# the last package was installed). Writes the bakery's package list (plugins/bakery/packages/
# manifest.py reads it) to $1 (default /tmp/bakery-packages.tsv); Packer downloads it next.
#
#   format  bakery-packages/1
#   family  deb|rpm
#   os      <ID> <VERSION_ID>                 (/etc/os-release)
#   pkg     <name> <version> <arch> <source package> <source version>
set -eu
out="${1:-/tmp/bakery-packages.tsv}"
tab="$(printf '\t')"
. /etc/os-release
{
  printf 'format\tbakery-packages/1\n'
  if command -v dpkg-query >/dev/null 2>&1; then
    printf 'family\tdeb\n'
    printf 'os\t%s\t%s\n' "${ID:-}" "${VERSION_ID:-}"
    # only packages in state "installed" (ii); source fields default to the binary's own
    dpkg-query -W -f='${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n' |
      awk -F"$tab" -v OFS="$tab" '$1 ~ /^ii/ { print "pkg", $2, $3, $4, $5, $6 }'
  elif command -v rpm >/dev/null 2>&1; then
    printf 'family\trpm\n'
    printf 'os\t%s\t%s\n' "${ID:-}" "${VERSION_ID:-}"
    # gpg-pubkey entries are keys, not packages; the source rpm name loses its -version-release.src.rpm
    rpm -qa --qf '%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\t%{SOURCERPM}\n' |
      awk -F"$tab" -v OFS="$tab" '$1 != "gpg-pubkey" {
        src = $4; sub(/-[^-]+-[^-]+\.src\.rpm$/, "", src); if (src == "(none)" || src == "") src = $1
        ver = $2; sub(/^0:/, "", ver)
        print "pkg", $1, ver, $3, src, ver }'
  else
    echo "capture-packages: neither dpkg-query nor rpm found" >&2
    exit 1
  fi
} >"$out.tmp"
mv "$out.tmp" "$out"
chmod 0644 "$out"
echo "capture-packages: $(grep -c '^pkg' "$out") packages listed in $out"
