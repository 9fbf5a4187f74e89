#!/usr/bin/env bash
# Prepares, on the Debian 12 build machine, the libraries that scripts/gpu-check.sh needs on a GPU
# machine that has CUDA, PyTorch (with its LibTorch), cmake, ninja and python3 but none of
# relora's other dependencies and no internet.
#
# Downloads the Debian packages (runtime and -dev) of gRPC, protobuf (protoc and the gRPC plugin),
# abseil, re2, c-ares, OpenSSL, zlib, spdlog, fmt, prometheus-cpp (civetweb, curl for its CMake
# config), yaml-cpp, SQLite, CLI11, nlohmann-json, GoogleTest/GoogleMock, SentencePiece, the Gloo
# headers and pkgconf, with their library dependencies (apt-cache depends, recursively, minus what
# every Debian/Ubuntu system has: libc, libstdc++, libgcc, ...), extracts them with dpkg -x into
# .gpu-deps/root and trims them (docs, man pages, static archives that have a shared twin, unused
# binaries). LibTorch, CUDA and NCCL are not included: the GPU machine's PyTorch wheel has them.
#
# Also the debugger that gpu-check.sh re-runs crashed tests and benchmarks under (the GPU machine
# has none): Debian's gdb-minimal (gdb 13.1 without Python) with the libraries it loads, packed as
# .gpu-deps/gdb.tar.gz, and the wrapper .gpu-deps/bin/gdb that unpacks it on first use and runs it
# with its own libraries (see GDB_SEEDS below).
#
# Idempotent: the .debs are cached in .gpu-deps-debs/ (never carried to the GPU machine); the
# extraction is redone only when the package set or its versions change (.gpu-deps/MANIFEST).
# Both folders are ignored by git. Carry ".gpu-deps" to the GPU machine (docs/gpu.md).
#
# Usage: scripts/gpu-prepare.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."

FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

DEPS_DIR=.gpu-deps
DEBS_DIR=${RELORA_GPU_DEBS_DIR:-.gpu-deps-debs}
ARCH_DIR=x86_64-linux-gnu
# Bump when the extraction or trimming below changes (forces a re-extraction).
LAYOUT_VERSION=9

if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  echo "gpu-prepare: needs Debian's apt-get and dpkg (run it on the Debian 12 build machine)" >&2
  exit 2
fi
[ "$(dpkg --print-architecture)" = amd64 ] || {
  echo "gpu-prepare: the GPU machine is x86-64; run this on an amd64 Debian" >&2
  exit 2
}

# What relora's CMake needs (see CMakeLists.txt, proto/, common/, coordinator/, client/, worker/,
# tests/): -dev packages and the tools run at build time.
# shellcheck disable=SC2034  # read through closure's namerefs
SEEDS=(
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libre2-dev libc-ares-dev libssl-dev zlib1g-dev
  libspdlog-dev libfmt-dev
  prometheus-cpp-dev libcivetweb-dev libcurl4-openssl-dev libcurl4
  libyaml-cpp-dev libsqlite3-dev libcli11-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libsentencepiece-dev
  libgloo-dev
  pkgconf pkgconf-bin libpkgconf3
)
# On every Debian/Ubuntu system (or only needed by maintainer scripts): never shipped. The GPU
# machine's own libc/libstdc++ must be used; its libstdc++ must be at least as new as Debian 12's
# (GCC 12), which holds for Ubuntu 24.04.
# shellcheck disable=SC2034  # read through closure's namerefs
EXCLUDE=(
  libc6 libc6-dev libc-dev-bin linux-libc-dev libcrypt1 libcrypt-dev libgcc-s1 gcc-12-base
  libstdc++6 libnsl2 libnsl-dev libtirpc3 libtirpc-dev libtirpc-common rpcsvc-proto
  libselinux1 libpcre2-8-0 libzstd1 liblzma5 libbz2-1.0 libmd0 libffi8 libgmp10
  debconf dpkg tar adduser passwd install-info readline-common libreadline8 libtinfo6 libacl1
  libaudit1 libaudit-common libcap-ng0 libpam0g libpam-modules libpam-modules-bin libdb5.3
  libsemanage2 libsemanage-common libsepol2 cdebconf libdebian-installer4 libnewt0.52 libslang2
  libtextwrap1
  # OpenSSL 3's runtime (libssl.so.3, libcrypto.so.3; 5.4 MB) is on every system with Python or
  # curl, the GPU machine's included: libssl-dev's headers are shipped, and its libssl.so and
  # libcrypto.so are pointed at the machine's own libraries below (same ABI in all of 3.x).
  libssl3
  # Sources and test frameworks that -dev packages pull in but the build never reads.
  googletest catch2 civetweb
)
# Packages whose own dependencies are not followed: only their files are needed.
#   libgloo-dev: headers for c10d's ProcessGroupGloo.hpp (the GPU build takes Gloo's code from
#     LibTorch, so libgloo0 and its Redis/ibverbs transports are not needed).
#   libcurl4*, libprometheus-cpp-push1.0: prometheus-cpp's CMake config requires CURL and its push
#     library to exist, but relora links only core and pull, so they are never loaded.
# shellcheck disable=SC2034  # read through closure's namerefs
NO_FOLLOW=(libgloo-dev libcurl4 libcurl4-openssl-dev libprometheus-cpp-push1.0)

# The debugger, resolved and extracted apart from the build's packages: its libraries never go on
# the built programs' LD_LIBRARY_PATH. gdb-minimal rather than gdb: no libpython3.11 and Python
# standard library to ship (about 20 MB; Debian's full gdb stops with "Python not initialized"
# without them), no source-highlight (Boost.Regex and ICU, 35 MB), no babeltrace (GLib).
# Everything it loads is shipped except glibc (libthread_db, which gdb needs for threads, must be
# the inferior's own, so the machine's), libstdc++ and libgcc. libdebuginfod1 is left out: with
# its curl, GnuTLS, Kerberos and LDAP it would add 8 MB for a feature that needs the internet.
# A stub with the same symbols is built in its place (gdb calls it only when DEBUGINFOD_URLS is
# set and debuginfod is enabled; the wrapper disables it).
# shellcheck disable=SC2034  # read through closure's namerefs
GDB_SEEDS=(gdb-minimal)
# shellcheck disable=SC2034  # read through closure's namerefs
GDB_EXCLUDE=(libc6 libgcc-s1 libstdc++6 gcc-12-base libdebuginfod1 readline-common)

in_list() {  # in_list NAME ITEMS...
  local x="$1"
  shift
  local y
  for y in "$@"; do [ "$x" = "$y" ] && return 0; done
  return 1
}

# Direct Depends/Pre-Depends of the given packages, one "pkg dep" line per edge. Alternatives
# ("a | b"): the first; virtual packages: their first provider.
direct_deps() {
  apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
    --no-enhances "$@" 2>/dev/null | awk '
      /^[^ ]/ { pkg = $1; in_alt = 0; want_provider = 0; next }
      /^    / { if (want_provider) { print pkg, $1; want_provider = 0 } next }
      /^ [ |](Pre)?Depends: / {
        alt = ($0 ~ /^ \|/)
        name = $2
        if (in_alt) { in_alt = alt; next }   # a later alternative of a group already taken
        in_alt = alt
        if (name ~ /^</) { want_provider = 1; next }
        print pkg, name
      }'
}

# closure OUT SEEDS EXCLUDE NO_FOLLOW (array names): the packages reachable from the seeds through
# direct dependencies, sorted, without the excluded ones; the no-follow ones are kept, but their
# own dependencies are not followed.
closure() {
  local -n out_=$1 seeds_=$2 exclude_=$3 no_follow_=$4
  local -A seen_=()
  local -a queue_=() follow_=()
  local p dep
  for p in "${seeds_[@]}"; do
    seen_[$p]=1
    queue_+=("$p")
  done
  while [ "${#queue_[@]}" -gt 0 ]; do
    follow_=()
    for p in "${queue_[@]}"; do in_list "$p" "${no_follow_[@]}" || follow_+=("$p"); done
    queue_=()
    [ "${#follow_[@]}" -gt 0 ] || break
    while read -r _ dep; do
      dep=${dep%%:*}  # "pkg:any" -> "pkg"
      [ -n "$dep" ] || continue
      in_list "$dep" "${exclude_[@]}" && continue
      [ -n "${seen_[$dep]:-}" ] && continue
      seen_[$dep]=1
      queue_+=("$dep")
    done < <(direct_deps "${follow_[@]}")
  done
  # shellcheck disable=SC2034  # out_ is the caller's array, written through the nameref
  mapfile -t out_ < <(printf '%s\n' "${!seen_[@]}" | sort)
}

echo "gpu-prepare: resolving the package set"
closure PACKAGES SEEDS EXCLUDE NO_FOLLOW
# The debugger's packages: the same walk, every dependency followed.
# shellcheck disable=SC2034  # read through closure's namerefs
GDB_NO_FOLLOW=()
closure GDB_PACKAGES GDB_SEEDS GDB_EXCLUDE GDB_NO_FOLLOW

# Candidate version and architecture of each package: the manifest, and the .deb file names.
versions_of() {  # versions_of PACKAGES... -> "package version architecture" lines
  local out known
  out=$(
    apt-cache show --no-all-versions "$@" 2>/dev/null |
      awk '/^Package: /{p=$2} /^Version: /{v=$2} /^Architecture: /{a=$2}
           /^$/ { if (p != "") print p, v, a; p = "" } END { if (p != "") print p, v, a }' | sort -u
  )
  mapfile -t known < <(printf '%s\n' "$out" | cut -d' ' -f1)
  if [ "${#known[@]}" -ne "$#" ]; then
    echo "gpu-prepare: apt-cache knows no candidate for:" >&2
    comm -23 <(printf '%s\n' "$@") <(printf '%s\n' "${known[@]}") | sed 's/^/  /' >&2
    echo "gpu-prepare: run 'apt-get update' and retry" >&2
    return 1
  fi
  printf '%s\n' "$out"
}
manifest=$(versions_of "${PACKAGES[@]}") || exit 1
gdb_manifest=$(versions_of "${GDB_PACKAGES[@]}") || exit 1
# Every .deb to have, once (zlib1g is in both sets).
all_manifest=$(printf '%s\n%s\n' "$manifest" "$gdb_manifest" | sort -u)
manifest_text=$(printf 'layout %s\n%s\n' "$LAYOUT_VERSION" "$manifest"; awk '{ print "gdb: " $0 }' <<<"$gdb_manifest")
echo "gpu-prepare: ${#PACKAGES[@]} packages, and ${#GDB_PACKAGES[@]} for the debugger"

if [ "$FORCE" = 0 ] && [ -d "$DEPS_DIR/root" ] && [ -f "$DEPS_DIR/MANIFEST" ] &&
  [ -f "$DEPS_DIR/gdb.tar.gz" ] && [ -x "$DEPS_DIR/bin/gdb" ] &&
  [ "$(cat "$DEPS_DIR/MANIFEST")" = "$manifest_text" ]; then
  echo "gpu-prepare: $DEPS_DIR is up to date ($(du -sh "$DEPS_DIR" | cut -f1))"
  exit 0
fi

# 1. Download what the cache lacks.
mkdir -p "$DEBS_DIR"
deb_of() {  # deb_of PACKAGE VERSION ARCH -> the file name apt-get download writes
  echo "$DEBS_DIR/${1}_${2//:/%3a}_${3}.deb"
}
missing=()
while read -r p v a; do
  [ -f "$(deb_of "$p" "$v" "$a")" ] || missing+=("$p=$v")
done <<<"$all_manifest"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "gpu-prepare: downloading ${#missing[@]} packages into $DEBS_DIR"
  # apt-get download runs as the sandbox user _apt where it can; a root-owned folder only makes
  # it warn and download unsandboxed.
  (
    cd "$DEBS_DIR" || exit 1
    apt-get download -q "${missing[@]}" 2>&1 | grep -v -e '^W: Download is performed unsandboxed' -e '^Get:'
    true
  )
  while read -r p v a; do
    [ -f "$(deb_of "$p" "$v" "$a")" ] || {
      echo "gpu-prepare: could not download $p $v (try 'apt-get update')" >&2
      exit 1
    }
  done <<<"$all_manifest"
fi

# 2. Extract into a fresh tree, trim, then swap it in.
tmp="$DEPS_DIR/root.new"
# The unfinished trees of a failed run would travel with .gpu-deps.
trap 'rm -rf "${DEPS_DIR:?}/root.new" "${DEPS_DIR:?}/gdb.new"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp"
while read -r p v a; do
  dpkg-deb -x "$(deb_of "$p" "$v" "$a")" "$tmp"
done <<<"$manifest"

usr="${tmp:?}/usr"
lib="$usr/lib/$ARCH_DIR"
# Some packages (zlib1g) still install into /lib: merge it into /usr/lib, as the GPU machine's
# loader and CMake never look in .gpu-deps/root/lib.
if [ -d "$tmp/lib" ]; then
  cp -a "$tmp/lib/." "$usr/lib/"
  rm -rf "${tmp:?}/lib"
fi
# Absolute links into the package tree (zlib1g-dev: libz.so -> /lib/.../libz.so.1.2.13) would
# point at the GPU machine's files: make them relative to the link, inside the tree.
find "$tmp" -type l | while read -r link; do
  target=$(readlink "$link")
  case "$target" in
    /*)
      inside="$tmp${target/#\/lib\//\/usr\/lib\/}"
      [ -e "$inside" ] && ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$inside")" "$link"
      ;;
  esac
done
# Documentation, manuals, translations, lintian and bug-report files.
rm -rf "$usr/src" "$usr/share/doc" "$usr/share/man" "$usr/share/info" "$usr/share/locale" \
  "$usr/share/lintian" "$usr/share/bug" "$usr/share/doc-base" "$usr/share/bash-completion" \
  "$usr/share/aclocal" "${tmp:?}/etc" "$usr/share/pkgconf/personality.d"
# Only the tools the build runs: protoc, grpc_cpp_plugin, pkgconf (pkg-config).
if [ -d "$usr/bin" ]; then
  find "$usr/bin" -mindepth 1 \( -type f -o -type l \) \
    ! -name protoc ! -name 'protoc-*' ! -name grpc_cpp_plugin ! -name pkgconf ! -name pkg-config -delete
fi
# Static archives whose shared library is there too (GoogleTest ships only static ones: kept).
find "$tmp" -name '*.a' | while read -r a; do
  stem=${a%.a}
  if compgen -G "${stem}.so*" >/dev/null; then rm -f "$a"; fi
done
# libssl.so/libcrypto.so (from libssl-dev) -> the GPU machine's OpenSSL 3 (see EXCLUDE).
for so in libssl libcrypto; do
  ln -sfn "/usr/lib/$ARCH_DIR/$so.so.3" "$lib/$so.so"
done
# gRPC libraries relora never links (it uses grpc++ with TLS support, protoc's plugin library,
# and nothing else). Their CMake targets stay defined (see the import checks below): linking one
# of them would fail at build time, loudly.
for unused in libgrpc_unsecure.so libgrpc++_unsecure.so libgrpcpp_channelz.so \
  libgrpc++_reflection.so libgrpc++_alts.so libgrpc++_error_details.so; do
  rm -f "$lib/$unused" "$lib/$unused".*
done
# curl: needed only as files for prometheus-cpp's CMake config (find_dependency(CURL)); keep it
# out of the folder that gpu-check.sh puts on LD_LIBRARY_PATH so tools that load the system's
# libcurl (an Ubuntu cmake, say) never pick up Debian's, whose dependencies are not shipped.
if compgen -G "$lib/libcurl.so.4*" >/dev/null; then
  mkdir -p "$lib/link-only"
  mv "$lib"/libcurl.so.4* "$lib/link-only/"
  real=$(basename "$(find "$lib/link-only" -name 'libcurl.so.4.*' -type f | head -1)")
  ln -sfn "link-only/$real" "$lib/libcurl.so"
fi
# pkg-config files: make /usr relative to the file's own folder (pkgconf's ${pcfiledir}).
find "$tmp" -name '*.pc' | while read -r pc; do
  dir=$(dirname "$pc")
  rel=$(realpath -m --relative-to="$dir" "$usr")
  sed -i -e "s#/usr\\b#\${pcfiledir}/$rel#g" "$pc"
done
# Gloo: Debian's CMake package points at /usr/lib/libgloo.so (an absolute path, and a library the
# GPU build must not load: LibTorch carries its own Gloo, and relora's objects reference none of
# Gloo's symbols, only c10d::ProcessGroupGloo's). Replace it with a headers-only target.
rm -rf "$usr/share/cmake/Gloo" "$usr"/lib/libgloo.so*
mkdir -p "$usr/share/cmake/Gloo"
cat >"$usr/share/cmake/Gloo/GlooConfig.cmake" <<'EOF'
# Written by scripts/gpu-prepare.sh: Gloo's headers only (Debian's libgloo-dev 0.5.0 of 2022),
# for c10d's ProcessGroupGloo.hpp. The code comes from LibTorch, which links Gloo statically.
get_filename_component(_gloo_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET gloo)
  add_library(gloo INTERFACE IMPORTED)
  set_target_properties(gloo PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_gloo_prefix}/include")
endif()
set(Gloo_FOUND TRUE)
unset(_gloo_prefix)
EOF
cat >"$usr/share/cmake/Gloo/GlooConfigVersion.cmake" <<'EOF'
set(PACKAGE_VERSION "0.5.0")
set(PACKAGE_VERSION_COMPATIBLE TRUE)
if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
  set(PACKAGE_VERSION_EXACT TRUE)
endif()
EOF
# CMake targets files fail find_package() when a file they import is missing: drop the existence
# checks of the files trimmed above (dropped tools and libraries), keep the rest.
find "$usr" -name '*.cmake' -path '*/cmake/*' | while read -r t; do
  grep -q '_cmake_import_check_files_for_' "$t" || continue
  # shellcheck disable=SC2016  # ${_IMPORT_PREFIX} is CMake's, matched literally
  gone=$({ grep -o '_cmake_import_check_files_for_[^ ]* "${_IMPORT_PREFIX}[^"]*"' "$t" || true; } |
    sed -e 's/.*${_IMPORT_PREFIX}//' -e 's/"$//' | while read -r rel; do
    [ -e "$usr$rel" ] || echo "$rel"
  done)
  [ -n "$gone" ] || continue
  awk -v gone="$gone" '
    BEGIN { n = split(gone, m, "\n") }
    index($0, "_cmake_import_check_files_for_") {
      for (i = 1; i <= n; i++) if (index($0, "${_IMPORT_PREFIX}" m[i] "\"")) next
    }
    { print }' "$t" >"$t.tmp" && mv "$t.tmp" "$t"
done
# Absolute /usr paths left in CMake package files would point at the GPU machine's /usr.
leftovers=$(grep -rlE --include='*.cmake' '"/usr/(lib|include|bin)' "$usr/lib" "$usr/share/cmake" 2>/dev/null |
  xargs -r grep -LE '_realOrig|/usr move' || true)
if [ -n "$leftovers" ]; then
  echo "gpu-prepare: warning: absolute /usr paths remain in:" >&2
  while read -r l; do echo "  $l"; done <<<"$leftovers" >&2
fi
# Nothing may dangle (a -dev symlink whose library was not shipped breaks find_library), and no
# link may leave the tree except the two OpenSSL ones made above on purpose.
dangling=$(find "$tmp" -type l | while read -r link; do
  target=$(readlink "$link")
  case "$target" in
    /usr/lib/"$ARCH_DIR"/libssl.so.3 | /usr/lib/"$ARCH_DIR"/libcrypto.so.3) ;;
    /*) echo "$link -> $target (absolute)" ;;
    *) [ -e "$link" ] || echo "$link -> $target" ;;
  esac
done)
if [ -n "$dangling" ]; then
  echo "gpu-prepare: error: dangling or absolute links (a runtime package is missing from the set?):" >&2
  while read -r l; do echo "  $l"; done <<<"$dangling" >&2
  exit 1
fi
# Every shipped library and tool must find its own dependencies in the tree or among the few the
# GPU machine has anyway (glibc, libstdc++, libgcc, OpenSSL 3). Not checked: curl and the
# prometheus-cpp push library, which are never loaded (see NO_FOLLOW).
SYSTEM_SONAMES=" libc.so.6 libm.so.6 libstdc++.so.6 libgcc_s.so.1 libpthread.so.0 libdl.so.2 librt.so.1
  libresolv.so.2 ld-linux-x86-64.so.2 libssl.so.3 libcrypto.so.3 linux-vdso.so.1 "
unresolved=$(find "$usr/bin" "$lib" -maxdepth 1 -type f \( -name '*.so.*' -o -perm -u+x \) \
  ! -name 'libprometheus-cpp-push*' | while read -r f; do
  LD_LIBRARY_PATH="$lib" ldd "$f" 2>/dev/null | awk -v lib="$lib" -v f="$f" '
    $2 == "=>" && index($3, lib) != 1 { print f ": " $1 " -> " $3 }'
done | while read -r line; do
  soname=$(awk '{print $2}' <<<"$line")
  case "$SYSTEM_SONAMES" in *" $soname "*) ;; *) echo "$line" ;; esac
done)
if [ -n "$unresolved" ]; then
  echo "gpu-prepare: error: libraries found outside the tree (add their packages to the set):" >&2
  while read -r l; do echo "  ${l#"$tmp"/}"; done <<<"$unresolved" >&2
  exit 1
fi

# 3. The debugger (see GDB_SEEDS): gdb and its libraries in gdb/{bin,lib}, packed into one archive
# (4.6 MiB instead of 11: the device tool carries at most 64 MiB with the tree), and the wrapper.
gdb_new="$DEPS_DIR/gdb.new"
rm -rf "$gdb_new"
mkdir -p "$gdb_new/x" "$gdb_new/gdb/bin" "$gdb_new/gdb/lib" "$gdb_new/gdb/share/gdb" "$gdb_new/bin"
while read -r p v a; do
  dpkg-deb -x "$(deb_of "$p" "$v" "$a")" "$gdb_new/x"
done <<<"$gdb_manifest"
cp "$gdb_new/x/usr/bin/gdb" "$gdb_new/gdb/bin/gdb"
for d in "$gdb_new/x/lib/$ARCH_DIR" "$gdb_new/x/usr/lib/$ARCH_DIR"; do
  [ -d "$d" ] || continue
  find "$d" -maxdepth 1 -name '*.so.*' \( -type f -o -type l \) -exec cp -a {} "$gdb_new/gdb/lib/" \;
done
# libdebuginfod.so.1 with the symbols and versions gdb binds to, doing nothing: debuginfod_begin
# returns no client, and gdb then looks for no debug information on the network.
cc_bin=$(command -v cc || command -v gcc || true)
[ -n "$cc_bin" ] || {
  echo "gpu-prepare: needs a C compiler (cc) for the debugger's libdebuginfod stub" >&2
  exit 1
}
cat >"$gdb_new/debuginfod-stub.c" <<'EOF'
/* Written by scripts/gpu-prepare.sh: a libdebuginfod.so.1 that finds nothing, for Debian's gdb on
   a machine without internet (the real one pulls in curl, GnuTLS, Kerberos and LDAP). */
#include <stddef.h>
typedef struct debuginfod_client debuginfod_client;
typedef int (*debuginfod_progressfn_t)(debuginfod_client *, long, long);
#define ENOSYS_ 38
debuginfod_client *debuginfod_begin(void) { return NULL; }
void debuginfod_end(debuginfod_client *c) { (void)c; }
int debuginfod_find_debuginfo(debuginfod_client *c, const unsigned char *id, int n, char **path) {
  (void)c; (void)id; (void)n; if (path) *path = NULL; return -ENOSYS_;
}
int debuginfod_find_executable(debuginfod_client *c, const unsigned char *id, int n, char **path) {
  (void)c; (void)id; (void)n; if (path) *path = NULL; return -ENOSYS_;
}
int debuginfod_find_source(debuginfod_client *c, const unsigned char *id, int n, const char *file,
                           char **path) {
  (void)c; (void)id; (void)n; (void)file; if (path) *path = NULL; return -ENOSYS_;
}
void debuginfod_set_progressfn(debuginfod_client *c, debuginfod_progressfn_t fn) { (void)c; (void)fn; }
void debuginfod_set_user_data(debuginfod_client *c, void *data) { (void)c; (void)data; }
void *debuginfod_get_user_data(debuginfod_client *c) { (void)c; return NULL; }
EOF
cat >"$gdb_new/debuginfod-stub.map" <<'EOF'
ELFUTILS_0.178 {
  global: debuginfod_begin; debuginfod_end; debuginfod_find_debuginfo; debuginfod_find_executable;
          debuginfod_find_source; debuginfod_set_progressfn;
  local: *;
};
ELFUTILS_0.179 {
  global: debuginfod_set_user_data; debuginfod_get_user_data;
} ELFUTILS_0.178;
EOF
"$cc_bin" -shared -fPIC -O2 -s -Wl,-soname,libdebuginfod.so.1 \
  -Wl,--version-script,"$gdb_new/debuginfod-stub.map" \
  -o "$gdb_new/gdb/lib/libdebuginfod.so.1" "$gdb_new/debuginfod-stub.c"
gdb_lib=$gdb_new/gdb/lib
# Only what gdb loads (the packages also hold libexpatw, libhistory, libtic).
gdb_keep=$(LD_LIBRARY_PATH="$gdb_lib" ldd "$gdb_new/gdb/bin/gdb" | awk -v lib="$gdb_lib/" '
  $2 == "=>" && index($3, lib) == 1 { print $3 }' | while read -r l; do
  basename "$l"
  basename "$(readlink -f "$l")"
done)
find "$gdb_lib" -mindepth 1 \( -type f -o -type l \) | while read -r f; do
  grep -qxF "$(basename "$f")" <<<"$gdb_keep" || rm -f "$f"
done
# gdb must resolve every library and every symbol (ldd -r: the stub's too) in gdb/lib or among
# glibc, libstdc++ and libgcc; and no link may dangle or leave the folder.
gdb_bad=$({
  for f in "$gdb_new/gdb/bin/gdb" "$gdb_lib"/*.so.*; do
    if [ ! -f "$f" ] || [ -L "$f" ]; then continue; fi
    LD_LIBRARY_PATH="$gdb_lib" ldd -r "$f" 2>&1 | awk -v lib="$gdb_lib" -v f="$f" '
      $2 == "=>" && index($3, lib) != 1 { print f ": " $1 " -> " $3; next }
      /undefined symbol/ { print f ": " $0 }'
  done
  find "$gdb_new/gdb" -type l | while read -r link; do
    case "$(readlink "$link")" in
      /*) echo "$link -> $(readlink "$link") (absolute)" ;;
      *) [ -e "$link" ] || echo "$link -> $(readlink "$link") (dangling)" ;;
    esac
  done
} | while read -r line; do
  soname=$(awk '{print $2}' <<<"$line")
  case "$SYSTEM_SONAMES" in *" $soname "*) ;; *) echo "${line#"$gdb_new"/}" ;; esac
done)
if [ -n "$gdb_bad" ]; then
  echo "gpu-prepare: error: the debugger's libraries are incomplete (add their packages to GDB_SEEDS):" >&2
  while read -r l; do echo "  $l"; done <<<"$gdb_bad" >&2
  exit 1
fi
# tar and gzip are on every Debian/Ubuntu system (both Essential); a fixed order, owner and date
# keep the archive, and so the wrapper's unpack folder name, the same for the same packages.
tar -C "$gdb_new" --sort=name --owner=0 --group=0 --numeric-owner --mtime='2023-01-01 00:00Z' \
  -cf - gdb | gzip -9n >"$gdb_new/gdb.tar.gz"
gdb_stamp=$(sha256sum "$gdb_new/gdb.tar.gz" | cut -c1-12)
gdb_version=$(sed -n 's/^gdb-minimal \([^ ]*\) .*/\1/p' <<<"$gdb_manifest")
# The wrapper. gdb hands its own environment to the program it runs: LD_LIBRARY_PATH is set for
# gdb alone, and the caller's value (or its absence) is restored for the program being debugged.
{
  cat <<EOF
#!/bin/sh
# Written by scripts/gpu-prepare.sh: Debian 12's gdb-minimal $gdb_version (no Python) for a machine
# without a debugger. Unpacks ../gdb.tar.gz on first use into \${RELORA_GDB_DIR:-\$TMPDIR or /tmp}
# (needs only sh, gzip, tar, mkdir, mv, rm) and runs that gdb, never one on PATH, with its own
# libraries; the program it debugs gets the caller's LD_LIBRARY_PATH. Extra options: -nx (no
# gdbinit files), its own empty data directory, debuginfod off (no network, and its library is a
# stub). Usage as gdb's: .gpu-deps/bin/gdb -batch -ex run -ex bt --args PROGRAM ARGS...
STAMP=$gdb_stamp
EOF
  cat <<'EOF'
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${RELORA_GDB_DIR:-${TMPDIR:-/tmp}/relora-gdb-$STAMP}
if [ ! -x "$dir/gdb/bin/gdb" ]; then
  [ -f "$here/gdb.tar.gz" ] || { echo "relora gdb wrapper: $here/gdb.tar.gz is missing" >&2; exit 127; }
  rm -rf "$dir.$$"
  mkdir -p "$dir.$$"
  gzip -dc "$here/gdb.tar.gz" | tar -xf - -C "$dir.$$"
  # Another wrapper may have unpacked it meanwhile: keep the first.
  mv -T "$dir.$$" "$dir" 2>/dev/null || rm -rf "$dir.$$"
  [ -x "$dir/gdb/bin/gdb" ] || { echo "relora gdb wrapper: could not unpack into $dir" >&2; exit 127; }
fi
set +e
# gdb starts the program through $SHELL (it quotes the arguments for it): make sure there is one.
if [ -n "${SHELL:-}" ] && [ ! -x "$SHELL" ]; then
  SHELL=/bin/sh
  export SHELL
fi
if [ -n "${LD_LIBRARY_PATH+set}" ]; then
  inferior_env="set environment LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
else
  inferior_env="unset environment LD_LIBRARY_PATH"
fi
LD_LIBRARY_PATH="$dir/gdb/lib" exec "$dir/gdb/bin/gdb" -nx -data-directory "$dir/gdb/share/gdb" \
  -iex "$inferior_env" -iex 'set debuginfod enabled off' "$@"
EOF
} >"$gdb_new/bin/gdb"
chmod +x "$gdb_new/bin/gdb"
# Try it where it was made: a shell that kills itself with SIGSEGV must give a backtrace. Only a
# warning when it does not (a sandbox here may forbid ptrace); gpu-check.sh repeats the test.
gdb_try=$(env -i PATH=/usr/bin:/bin RELORA_GDB_DIR="$gdb_new/try" timeout 60 "$gdb_new/bin/gdb" -batch \
  -ex run -ex bt --args /bin/sh -c 'kill -SEGV $$' 2>&1 || true)
if grep -q 'SIGSEGV' <<<"$gdb_try" && grep -q '^#0 ' <<<"$gdb_try"; then
  echo "gpu-prepare: debugger: gdb-minimal $gdb_version, $(du -k "$gdb_new/gdb.tar.gz" | cut -f1) KiB packed; a backtrace works"
else
  echo "gpu-prepare: warning: the packed gdb did not print a backtrace here:" >&2
  tail -n 15 <<<"$gdb_try" | sed 's/^/  /' >&2
fi

rm -rf "${DEPS_DIR:?}/root" "${DEPS_DIR:?}/bin" "${DEPS_DIR:?}/gdb.tar.gz"
mv "$tmp" "$DEPS_DIR/root"
mv "$gdb_new/gdb.tar.gz" "$DEPS_DIR/gdb.tar.gz"
mv "$gdb_new/bin" "$DEPS_DIR/bin"
rm -rf "$gdb_new"
printf '%s\n' "$manifest_text" >"$DEPS_DIR/MANIFEST"
# What travels (apparent size; blocks on disk are a few MiB more).
size_mib=$(du -sm --apparent-size "$DEPS_DIR" | cut -f1)
echo "gpu-prepare: $DEPS_DIR ready: ${#PACKAGES[@]} packages, ${size_mib} MiB ($(find "$DEPS_DIR/root" -type f | wc -l) files), gdb included"
if [ "$size_mib" -gt 48 ]; then
  echo "gpu-prepare: warning: over the ~45 MiB budget; the device tool carries at most 64 MiB with the tree" >&2
fi
