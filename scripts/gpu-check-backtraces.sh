# Sourced by scripts/gpu-check.sh (not run on its own): re-running crashed test and benchmark
# processes under the gdb that scripts/gpu-prepare.sh ships, and summarising their backtraces. Uses
# gpu-check.sh's globals and helpers (LOGS, BUILD, EXTRA_NOTES, run_timed, ...).
# shellcheck shell=bash disable=SC2034,SC2153,SC2154

# ---- backtraces of crashed processes -------------------------------------------------------------
# gdb (from .gpu-deps, see gpu-prepare.sh) runs the process again; when it stops on the signal:
# the crashing thread's backtrace, the faulting address and instruction, every thread's innermost
# 30 frames and the loaded libraries (which copy of a library was bound). Address randomisation
# stays on (turning it off needs a personality() that containers may forbid).
# shellcheck disable=SC2016  # $_siginfo and $pc are gdb's
GDB_ARGS=(-batch -q
  -iex 'set pagination off' -iex 'set width unlimited' -iex 'set confirm off'
  -iex 'set print thread-events off' -iex 'set disable-randomization off'
  -iex 'handle SIGPIPE nostop noprint pass'
  -ex run
  -ex 'echo \n==== crashing thread\n' -ex 'bt 60'
  -ex 'echo \n==== faulting address and instruction\n'
  -ex 'p $_siginfo._sifields._sigfault.si_addr' -ex 'x/i $pc'
  -ex 'echo \n==== all threads\n' -ex 'thread apply all bt 30'
  -ex 'echo \n==== shared libraries\n' -ex 'info sharedlibrary'
  -ex 'echo \n==== end\n')
BT_ENV=()  # NAME=VALUE pairs for the next backtrace (a test's ENVIRONMENT property)

# check_gdb: whether gdb runs here and can trace (ptrace may be forbidden in a container), on a
# shell that kills itself with SIGSEGV. Sets GDB_STATE: empty when it printed a backtrace.
check_gdb() {
  local out
  if [ ! -x "$GDB" ]; then
    GDB_STATE="no debugger: .gpu-deps/bin/gdb is missing (run scripts/gpu-prepare.sh, carry .gpu-deps)"
    return
  fi
  # shellcheck disable=SC2016  # $$ belongs to the shell under test
  out=$(timeout -k 5 60 "$GDB" -batch -iex 'set disable-randomization off' -ex run -ex bt \
    --args /bin/sh -c 'kill -SEGV $$' 2>&1)
  if grep -q 'received signal SIGSEGV' <<<"$out" && grep -q '^#0 ' <<<"$out"; then
    GDB_STATE=""
  else
    GDB_STATE="gdb does not work here: $({ grep -v '^warning:' <<<"$out" | grep -m 1 -iE 'ptrace|not permitted|cannot|error' ||
      grep -v -e '^[[:space:]]*$' -e '^\[' <<<"$out" | tail -n 1; } | cut -c1-150)"
  fi
  echo "gdb: $(timeout 20 "$GDB" --version 2>/dev/null | head -1); self-test: ${GDB_STATE:-backtrace of a SIGSEGV OK}"
  if [ -n "$GDB_STATE" ]; then printf '%s\n' "$out" | tail -n 20; fi
}

# bt_summary FIRST_LINE: one line on the gdb run logged in backtraces.log from FIRST_LINE on: the
# signal and the crashing frame (the innermost one outside libc, libstdc++ and libgcc, and #0 when
# that is another), or what happened instead.
bt_summary() {
  tail -n +"$1" "$BT_LOG" | awk '
    function base(path,   n, parts) { n = split(path, parts, "/"); return parts[n] }
    function frame(l,   num, rest, fn, loc, i) {
      num = l; sub(/ .*/, "", num)
      rest = l; sub(/^#[0-9]+ +/, "", rest); sub(/^0x[0-9a-f]+ in /, "", rest)
      loc = ""
      if (match(rest, / at [^ ]+$/)) loc = " at " base(substr(rest, RSTART + 4))
      else if (match(rest, / from [^ ]+$/)) loc = " from " base(substr(rest, RSTART + 6))
      fn = rest; i = index(fn, " ("); if (i > 1) fn = substr(fn, 1, i - 1)
      return num " " fn loc
    }
    /received signal SIG/ && sig == "" { match($0, /SIG[A-Z0-9]+/); sig = substr($0, RSTART, RLENGTH) }
    /^==== crashing thread/ { inbt = 1; next }
    /^==== / { inbt = 0 }
    # Frames of the C and C++ runtimes, of abort() and of an exception on its way to terminate().
    function runtime(l,   fn) {
      if (l ~ /from [^ ]*\/(libc|libstdc\+\+|libgcc_s|libpthread|libm)[.]so/) return 1
      fn = l; sub(/^#[0-9]+ +/, "", fn); sub(/^0x[0-9a-f]+ in /, "", fn)
      if (fn ~ /^\?\? \(/ || fn ~ /^<signal handler/) return 1
      if (fn ~ /^(__pthread_kill|__GI_|raise|abort|__assert|__libc_|__cxa_|__cxxabiv1|std::terminate|__gnu_cxx::__verbose_terminate_handler|_Unwind_|c10::detail::|c10::Error::)/) return 1
      return l ~ / at \.\.?\/(nptl|sysdeps|stdlib|assert|signal|csu|string|malloc)\//
    }
    inbt && /^#[0-9]+ / {
      if (first == "") first = $0
      if (pick == "" && !runtime($0)) pick = $0
    }
    /exited (normally|with code)/ && exited == "" { exited = $0; sub(/.*\) /, "", exited); sub(/\]$/, "", exited) }
    (/^ptrace: / || /[Cc]ould not trace/ || /Operation not permitted/) && perr == "" { perr = $0 }
    END {
      if (sig != "") {
        if (first == "") { print sig ", no stack"; exit }
        if (pick == "") pick = first
        out = sig " in " frame(pick)
        if (pick != first) out = out " (" frame(first) ")"
        print substr(out, 1, 220)
      } else if (perr != "") print "gdb could not trace it: " substr(perr, 1, 150)
      else if (exited != "") print "did not crash under gdb (" exited ")"
      else print "no crash seen under gdb"
    }'
}

# backtrace LABEL DIR COMMAND...: re-runs COMMAND (a process that has just crashed) in DIR under
# gdb, with BT_ENV added to the environment; the transcript goes to backtraces.log, the crashing
# thread's frames to the console. Sets BT_NOTE (bt_summary's line, or why there is no backtrace)
# and BT_OK (1 when gdb caught the signal). Takes its time from the budget like a phase.
backtrace() {
  local label=$1 dir=$2 first rc
  shift 2
  BT_OK=0
  if [ -n "$GDB_STATE" ]; then
    BT_NOTE="no backtrace: $GDB_STATE"
    return
  fi
  if ((BT_COUNT >= BT_MAX)); then
    BT_NOTE="no backtrace: $BT_MAX taken already (RELORA_GPU_BACKTRACE_MAX)"
    return
  fi
  BT_COUNT=$((BT_COUNT + 1))
  printf '\n######## %s (in %s)\n' "$label" "$dir" >>"$BT_LOG"
  first=$(lines_of "$BT_LOG")
  RT_CAP_ALWAYS=1 run_timed "backtrace: $label, under gdb" "$BT_TIMEOUT" "$BT_LOG" \
    env -C "$dir" "${BT_ENV[@]}" "$GDB" "${GDB_ARGS[@]}" --args "$@" >/dev/null
  rc=$?
  if [ "$RT_STATUS" = SKIP ]; then
    BT_NOTE="no backtrace: $RT_NOTE"
    return
  fi
  BT_NOTE=$(bt_summary "$first")
  case "$BT_NOTE" in SIG*) BT_OK=1 ;; esac
  ((rc == 124 || rc == 137)) && BT_NOTE="gdb $RT_NOTE; $BT_NOTE"
  echo "== backtrace: $label (${RT_SECS}s): $BT_NOTE"
  tail -n +"$first" "$BT_LOG" | awk '/^==== crashing thread/ { p = 1; next } /^==== / { p = 0 } p && NF' | head -n 25
}

# A value from a GPU_BENCH key=value line.
kv() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print $2 }'; }
