# Run by ctest in place of an Observability test whose tool was not found at configure time:
# fails with a message that says what to install (the test must fail, not be skipped).
message(FATAL_ERROR
  "${TEST}: '${TOOL}' was not found when CMake configured the build. It comes with the Debian "
  "package '${PACKAGE}', which scripts/setup.sh installs. Install it and re-run cmake.")
