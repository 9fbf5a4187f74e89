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
LAYOUT_VERSION=8

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
NO_FOLLOW=(libgloo-dev libcurl4 libcurl4-openssl-dev libprometheus-cpp-push1.0)

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

echo "gpu-prepare: resolving the package set"
declare -A seen=()
queue=()
for p in "${SEEDS[@]}"; do
  seen[$p]=1
  queue+=("$p")
done
while [ "${#queue[@]}" -gt 0 ]; do
  follow=()
  for p in "${queue[@]}"; do in_list "$p" "${NO_FOLLOW[@]}" || follow+=("$p"); done
  queue=()
  [ "${#follow[@]}" -gt 0 ] || break
  while read -r _ dep; do
    dep=${dep%%:*}  # "pkg:any" -> "pkg"
    [ -n "$dep" ] || continue
    in_list "$dep" "${EXCLUDE[@]}" && continue
    [ -n "${seen[$dep]:-}" ] && continue
    seen[$dep]=1
    queue+=("$dep")
  done < <(direct_deps "${follow[@]}")
done
mapfile -t PACKAGES < <(printf '%s\n' "${!seen[@]}" | sort)

# Candidate version and architecture of each package: the manifest, and the .deb file names.
manifest=$(
  apt-cache show --no-all-versions "${PACKAGES[@]}" 2>/dev/null |
    awk '/^Package: /{p=$2} /^Version: /{v=$2} /^Architecture: /{a=$2}
         /^$/ { if (p != "") print p, v, a; p = "" } END { if (p != "") print p, v, a }' | sort -u
)
mapfile -t known < <(printf '%s\n' "$manifest" | cut -d' ' -f1)
if [ "${#known[@]}" -ne "${#PACKAGES[@]}" ]; then
  echo "gpu-prepare: apt-cache knows no candidate for:" >&2
  comm -23 <(printf '%s\n' "${PACKAGES[@]}") <(printf '%s\n' "${known[@]}") | sed 's/^/  /' >&2
  echo "gpu-prepare: run 'apt-get update' and retry" >&2
  exit 1
fi
manifest_text=$(printf 'layout %s\n%s\n' "$LAYOUT_VERSION" "$manifest")
echo "gpu-prepare: ${#PACKAGES[@]} packages"

if [ "$FORCE" = 0 ] && [ -d "$DEPS_DIR/root" ] && [ -f "$DEPS_DIR/MANIFEST" ] &&
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
done <<<"$manifest"
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
  done <<<"$manifest"
fi

# 2. Extract into a fresh tree, trim, then swap it in.
tmp="$DEPS_DIR/root.new"
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

rm -rf "$DEPS_DIR/root"
mv "$tmp" "$DEPS_DIR/root"
printf '%s\n' "$manifest_text" >"$DEPS_DIR/MANIFEST"
size_mib=$(du -sm "$DEPS_DIR" | cut -f1)
echo "gpu-prepare: $DEPS_DIR ready: ${#PACKAGES[@]} packages, ${size_mib} MiB ($(find "$DEPS_DIR/root" -type f | wc -l) files)"
if [ "$size_mib" -gt 48 ]; then
  echo "gpu-prepare: warning: over the ~40 MiB budget; the device tool carries at most 64 MiB with the tree" >&2
fi
