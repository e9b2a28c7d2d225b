# bench/common/check_bad_arg.cmake — runs one benchmark program with a bad
# command-line value and checks that it was refused properly:
#   - a non-zero exit status (not a crash);
#   - exactly one line on stderr, naming the flag (FLAG);
#   - nothing on stdout (every program prints its header when work starts);
#   - no --json file written (JSON, the file passed with --json; may be empty).
#
#   cmake -DFLAG=--epochs -DJSON=<file> -P check_bad_arg.cmake -- <program> <args...>
# Declared as CTest tests by synk_bad_arg_test() (bad_args.cmake).
cmake_minimum_required(VERSION 3.25)

set(cmd)
set(seen_dashes FALSE)
math(EXPR last "${CMAKE_ARGC} - 1")
foreach(i RANGE 1 ${last})
  if(seen_dashes)
    list(APPEND cmd "${CMAKE_ARGV${i}}")
  elseif(CMAKE_ARGV${i} STREQUAL "--")
    set(seen_dashes TRUE)
  endif()
endforeach()
if(NOT cmd OR NOT FLAG)
  message(FATAL_ERROR "usage: cmake -DFLAG=<flag> [-DJSON=<file>] -P check_bad_arg.cmake -- <program> <args...>")
endif()
if(JSON)
  file(REMOVE "${JSON}")
endif()

execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
list(JOIN cmd " " shown)
set(problems)
if(NOT rc MATCHES "^[0-9]+$")
  list(APPEND problems "did not exit normally: ${rc}")
elseif(rc EQUAL 0)
  list(APPEND problems "exit status 0")
endif()
string(REGEX REPLACE "\n$" "" err_body "${err}")
string(FIND "${err_body}" "\n" newline)
if(err_body STREQUAL "")
  list(APPEND problems "nothing on stderr")
elseif(NOT newline EQUAL -1)
  list(APPEND problems "more than one line on stderr")
endif()
string(FIND "${err}" "${FLAG}" at)
if(at EQUAL -1)
  list(APPEND problems "stderr does not name ${FLAG}")
endif()
if(NOT out STREQUAL "")
  list(APPEND problems "output on stdout (work started?)")
endif()
if(JSON AND EXISTS "${JSON}")
  list(APPEND problems "the --json file was written")
endif()

if(problems)
  list(JOIN problems "; " why)
  message(FATAL_ERROR "${shown}\n  exit status: ${rc}\n  stdout: ${out}\n  stderr: ${err}\n  FAILED: ${why}")
endif()
message(STATUS "${shown}: refused with status ${rc}: ${err_body}")
